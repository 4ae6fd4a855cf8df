"""Records of the cluster: the engines (nodes) sharing one database, and the work a dead
node left behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.domain.models import JobExecutionResult


@dataclass
class NodeInfo:
    """One engine of the cluster, as registered in the store. ``alive``: its heartbeat
    (on the database's clock) is younger than the node timeout."""

    node_id: str
    host: str
    pid: int
    version: str
    state: str = "running"
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    alive: bool = True
    running: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "state": self.state if self.alive else "dead",
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "heartbeat_at": self.heartbeat_at.isoformat() if self.heartbeat_at else None,
            "alive": self.alive,
            "running": list(self.running),
        }


@dataclass
class OrphanedExecution:
    """An unfinished execution whose owner is not a live node: ``owner`` and ``attempt``
    are the fence its settlement must match (so of two recovering nodes one wins)."""

    result: JobExecutionResult
    owner: str | None
    attempt: int
