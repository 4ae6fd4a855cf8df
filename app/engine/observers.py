"""What the engine tells its observers (metrics, notifications), and the fan-out it calls.

The engine calls ``EngineObservers`` at a few points only: an execution ended (whatever way:
run, cancelled before it started, failed to be recorded) and a fire of a schedule was not run
(missed, skipped, coalesced). Observers must be quick and must not raise into the engine: a
broken observer is logged and the engine carries on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.domain.enums import JobStatus
from app.domain.models import JobDefinition, JobExecutionResult

log = logging.getLogger("app.engine.observers")


@dataclass(frozen=True)
class FinishedRun:
    """An execution that reached a terminal state, as the engine saw it end."""

    result: JobExecutionResult
    job: JobDefinition
    trigger: str
    scheduled_for: datetime | None


@dataclass(frozen=True)
class UnrunFire:
    """A fire of a schedule recorded without running (``reason`` says why)."""

    job: JobDefinition
    execution_id: str
    scheduled_for: datetime
    reason: str
    status: JobStatus

    @property
    def outcome(self) -> str:
        """The misfire policy's outcome, one of a fixed set (a metric label)."""
        return misfire_outcome(self.reason)


def misfire_outcome(reason: str) -> str:
    """``missed`` (beyond the misfire grace), ``coalesced`` (folded into a later run),
    ``skipped`` (misfire_policy skip), ``capped`` (run_all's cap), ``overlap`` (an earlier
    run was still active), else ``other``."""
    text = reason.lower()
    if text.startswith("missed"):
        return "missed"
    if "coalesced" in text:
        return "coalesced"
    if "overlap_policy" in text:
        return "overlap"
    if "run_all" in text:
        return "capped"
    if "misfire_policy skip" in text:
        return "skipped"
    return "other"


class EngineObserver(Protocol):
    def execution_finished(self, run: FinishedRun) -> None: ...

    def fire_not_run(self, fire: UnrunFire) -> None: ...


class EngineObservers:
    """The engine's observers; each call goes to every one, in the order added."""

    def __init__(self) -> None:
        self._observers: list[EngineObserver] = []

    def add(self, observer: EngineObserver) -> None:
        self._observers.append(observer)

    def remove(self, observer: EngineObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def execution_finished(
        self,
        result: JobExecutionResult,
        job: JobDefinition,
        trigger: str,
        scheduled_for: datetime | None,
    ) -> None:
        if not self._observers or not result.status.is_terminal:
            return
        run = FinishedRun(result, job, trigger, scheduled_for)
        for observer in self._observers:
            try:
                observer.execution_finished(run)
            except Exception:
                log.exception("observer %r failed on execution %s", observer, result.execution_id)

    def fire_not_run(
        self,
        job: JobDefinition,
        execution_id: str,
        scheduled_for: datetime,
        reason: str,
        status: JobStatus,
    ) -> None:
        if not self._observers:
            return
        fire = UnrunFire(job, execution_id, scheduled_for, reason, status)
        for observer in self._observers:
            try:
                observer.fire_not_run(fire)
            except Exception:
                log.exception("observer %r failed on fire %s", observer, execution_id)
