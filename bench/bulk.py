"""Bulk creation of scheduled runs for the scale and drain benchmarks.

Writes exactly the rows ``SqlExecutionStore.add_scheduled_run`` writes (the PENDING history
row built by the store's own ``_pending_values`` and the ``scheduled_runs_v2`` row), but
many per statement and transaction, through SQLAlchemy Core on the store's engine. Used
where going through ``schedule_job`` one run at a time would take longer than the
benchmark is worth; the figures say when it was used.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import insert

from app.domain.models import JobDefinition
from app.domain.records import TRIGGER_SCHEDULED
from app.persistence import SqlExecutionStore
from app.persistence.convert import dump_json
from app.persistence.models import RUN_PENDING, JobExecutionV2, ScheduledRunV2

BATCH = 5_000


def run_rows(job: JobDefinition, scheduled_for: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The history row and the scheduled-run row of one one-off run (as the store writes)."""
    execution_id = uuid.uuid4().hex
    history = SqlExecutionStore._pending_values(
        execution_id, job, TRIGGER_SCHEDULED, scheduled_for, None
    )
    history["status"] = "pending"
    history["attempt"] = 0
    history["created_at"] = history["updated_at"] = datetime.now(scheduled_for.tzinfo)
    run = {
        "execution_id": execution_id,
        "job_id": job.job_id,
        "job_definition_json": history["job_definition_json"],
        "scheduled_for": scheduled_for,
        "schedule_key": None,
        "timezone": job.timezone,
        "trigger": TRIGGER_SCHEDULED,
        "requested_by": None,
        "attempt": 0,
        "status": RUN_PENDING,
        "created_at": history["created_at"],
    }
    return history, run


async def bulk_schedule(
    url: str,
    job: JobDefinition,
    count: int,
    when: Callable[[int], datetime],
    *,
    batch: int = BATCH,
) -> None:
    """Insert ``count`` scheduled runs of ``job``; run ``i`` is due at ``when(i)``."""
    definition = dump_json(job.to_dict())
    store = SqlExecutionStore(url)
    await store.open()
    try:
        engine = store.engine
        done = 0
        while done < count:
            size = min(batch, count - done)
            histories, runs = [], []
            for i in range(done, done + size):
                history, run = run_rows(job, when(i))
                history["job_definition_json"] = run["job_definition_json"] = definition
                histories.append(history)
                runs.append(run)
            async with engine.begin() as conn:
                await conn.execute(insert(JobExecutionV2), histories)
                await conn.execute(insert(ScheduledRunV2), runs)
            done += size
    finally:
        await store.close()
