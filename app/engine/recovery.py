"""Recovery: settle the work of dead nodes, and only theirs.

It runs when an engine starts and then periodically on every live node (after its
heartbeat). A live node's work is never touched: what qualifies is work whose owner has no
heartbeat younger than the node timeout (on the database's clock). Every settlement is a
compare-and-set on the row's (owner, attempt) that raises the attempt, so when two nodes
recover at once each piece of work is settled once, and the dead owner's late writes (if it
was only paused) no longer land.

* a claimed run that never started goes back to pending (another node claims it);
* an execution that was running is ended FAILED "interrupted on node <id>", and retried as a
  new execution if its job has retries left; the retry names it (``retry_of``) and flags
  every step not on record as finished as one that may run a second time
  (``possible_duplicate_of``, ``possible_duplicate_steps``): progress rows are written in
  batches, so the record may trail what the dead node did by more than one step;
* an execution handed to a dead node's queue but not started is ended FAILED (at most once:
  it is never run a second time);
* runs due longer ago than the misfire grace are recorded missed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from app.domain.cluster import OrphanedExecution
from app.domain.enums import JobStatus, StepStatus
from app.domain.records import TRIGGER_SCHEDULED, ScheduledRun
from app.engine.ports import ClusterStore, ExecutionStore

log = logging.getLogger("app.engine.recovery")


class Recovery:
    def __init__(
        self,
        store: ExecutionStore,
        *,
        node_id: str,
        node_timeout_seconds: float,
        misfire_grace: timedelta,
        clock: Callable[[], datetime],
        on_missed: Callable[[ScheduledRun, str], None] | None = None,
    ) -> None:
        self._store = store
        self._on_missed = on_missed
        self._node_id = node_id
        self._timeout = node_timeout_seconds
        self._misfire_grace = misfire_grace
        self._clock = clock

    async def run_once(self, *, starting: bool = False) -> dict[str, int]:
        """One pass; how much it settled. ``starting``: the engine has not taken any work
        yet, so even rows that name this node (a store reused by a new engine) are left
        over from before."""
        report = {"dead_nodes": 0, "requeued": 0, "interrupted": 0, "retried": 0, "missed": 0}
        if isinstance(self._store, ClusterStore):
            await self._settle_dead_nodes(self._store, report, starting=starting)
        else:
            await self._settle_previous_engine(self._store, report)
        report["missed"] = await self._record_misfires()
        if any(report.values()):
            log.warning("recovered the work of dead nodes: %s", report)
        return report

    async def _settle_previous_engine(self, store: ExecutionStore, report: dict[str, int]) -> None:
        """A store of one process (in memory): everything unfinished in it was left by an
        engine that stopped or died before this one started."""
        report["requeued"] = await store.requeue_claimed_runs(expired_only=False)
        for left in await store.find_running(include_queued=True):
            outcome = await self._settle(OrphanedExecution(left, None, 0), store)
            if outcome is not None:
                report[outcome] += 1

    async def _settle_dead_nodes(
        self, store: ClusterStore, report: dict[str, int], *, starting: bool
    ) -> None:
        dead = await store.remove_dead_nodes(self._timeout, keep=self._node_id)
        report["dead_nodes"] = len(dead)
        report["requeued"] = await store.requeue_orphaned_claims(self._timeout)
        also = self._node_id if starting else None
        for orphan in await store.find_orphaned(self._timeout, also_of=also):
            if orphan.owner == self._node_id and not starting:
                continue  # this node is alive: what it holds is its own to finish
            outcome = await self._settle(orphan, store)
            if outcome is not None:
                report[outcome] += 1
        if dead:
            log.warning("nodes %s are dead (no heartbeat for %.0fs)", dead, self._timeout)

    async def _settle(
        self, orphan: OrphanedExecution, store: ClusterStore | ExecutionStore
    ) -> str | None:
        left = orphan.result
        node = orphan.owner or "unknown"
        started = left.status is not JobStatus.PENDING
        job = await self._store.get_job_definition(left.execution_id)

        async def take_over(reason: str, retry: ScheduledRun | None = None) -> bool:
            if isinstance(store, ClusterStore):
                return await store.take_over(orphan, reason, retry=retry)
            if not await store.mark_interrupted(left.execution_id, reason):
                return False
            if retry is not None:
                await store.add_scheduled_run(retry)
            return True

        if not started:
            reason = f"interrupted on node {node}: the node stopped before it started"
            return "interrupted" if await take_over(reason) else None
        reason = f"interrupted on node {node}: the node stopped while it was running"
        if job is None or left.retry_count >= job.max_retries:
            return "interrupted" if await take_over(reason) else None
        # Progress rows are written in batches, so what is on record is a prefix of what
        # happened: beyond it, any step not on record as finished may have started (and done
        # its work), one after another, before the node died. Each may run a second time.
        done = {s.step_id for s in left.steps if s.status is StepStatus.SUCCESS}
        in_flight = [
            step_id
            for step_id in dict.fromkeys(str(c.get("step_id", "")) for c in job.steps)
            if step_id not in done
        ]
        metadata: dict[str, object] = {"retry_of": left.execution_id}
        if in_flight:
            metadata["possible_duplicate_of"] = left.execution_id
            metadata["possible_duplicate_steps"] = in_flight
        retry = ScheduledRun(
            execution_id=uuid.uuid4().hex,
            job=job,
            scheduled_for=self._clock(),
            trigger=TRIGGER_SCHEDULED,
            requested_by=left.metadata.get("requested_by"),
            metadata=metadata,
        )
        reason = f"{reason}; retried as {retry.execution_id}"
        if not await take_over(reason, retry):
            return None
        log.warning(
            "execution %s of job %s was running on dead node %s: retried as %s%s",
            left.execution_id,
            left.job_id,
            node,
            retry.execution_id,
            f" (steps {in_flight} may run twice)" if in_flight else "",
        )
        return "retried"

    async def _record_misfires(self) -> int:
        now = self._clock()
        cutoff = now - self._misfire_grace
        missed = 0
        while runs := await self._store.due_scheduled_runs(cutoff, 500):
            for run in runs:
                late = (now - run.scheduled_for).total_seconds()
                reason = (
                    f"missed: due at {run.scheduled_for.isoformat()} while no node ran it; "
                    f"{late:.0f}s late is beyond the misfire grace of "
                    f"{self._misfire_grace.total_seconds():.0f}s"
                )
                if await self._store.mark_missed(run.execution_id, reason):
                    missed += 1
                    if self._on_missed is not None:
                        self._on_missed(run, reason)
        return missed
