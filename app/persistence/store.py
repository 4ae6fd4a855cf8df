"""SqlExecutionStore: the engine's ExecutionStore and JobStore ports on SQLite or PostgreSQL.

It implements ``app.engine.ports.ExecutionStore`` and ``JobStore`` (the latter mixed in
from ``app.persistence.job_store``) structurally: persistence does not import the engine.
Every call is one short transaction; nothing is held across a step's I/O. The history
writes of running executions (job and step rows) go through a group-commit writer
(``app.persistence.writer``): many executions' writes share one transaction, and every other
call first waits for what was submitted before it. Migrations are applied by the composition
root (``app.persistence.migrate``), not here.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.domain.enums import JobStatus
from app.domain.errors import ExecutionEngineError
from app.domain.models import JobDefinition, JobExecutionResult, StepExecutionResult
from app.domain.records import (
    CANCELLED_BEFORE_START,
    DEFAULT_MAX_OUTPUT_CHARS,
    DuplicateScheduledRunError,
    ExecutionPage,
    ExecutionQuery,
    ScheduledRun,
    check_limit,
    decode_cursor,
    encode_cursor,
    pending_metadata,
    storable_job,
    storable_step,
)
from app.persistence.calendar_store import SqlCalendarStoreMixin
from app.persistence.checkpoint import WalCheckpointer
from app.persistence.cluster import NodeRepository, SqlClusterMixin
from app.persistence.convert import (
    definition_from_json,
    dump_json,
    fit,
    fit_text,
    job_from_row,
    job_values,
    load_json_object,
    run_from_row,
    step_values,
)
from app.persistence.database import SQLITE_IMMEDIATE, create_engine, sync_sqlite_engine
from app.persistence.history import (
    HistoryGroup,
    history_groups,
    write_history,
    write_history_sync,
)
from app.persistence.job_store import SqlJobStoreMixin
from app.persistence.models import (
    RUN_CANCELLED,
    RUN_CLAIMED,
    RUN_DONE,
    RUN_PENDING,
    JobExecutionV2,
)
from app.persistence.outbox import SqlOutboxMixin
from app.persistence.repositories import (
    ExecutionRepository,
    ScheduledRunRepository,
    job_params,
    pending_params,
    started_params,
    step_params,
)
from app.persistence.writer import GroupCommitWriter, QueuedRow

#: Longest wait for queued history writes before a read or another write (reached only
#: while the database is unreachable).
BARRIER_WAIT_SECONDS = 5.0

#: Triggers whose executions never have a scheduled run to mark started.
_UNSCHEDULED_TRIGGERS = frozenset({"now", "queued"})


def default_owner() -> str:
    """A name for this process, unique across restarts: host:pid:random."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class StoreNotOpenError(ExecutionEngineError):
    def __init__(self) -> None:
        super().__init__("the execution store is not open (call open() first)")


class SchemaMissingError(ExecutionEngineError):
    """The database answers but has no execution tables: it was never migrated."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(
            f"database {url!r} has no execution store tables; run `make migrate` "
            "(alembic upgrade head) or start the service with V2_AUTO_MIGRATE on"
        )


class SqlExecutionStore(SqlJobStoreMixin, SqlCalendarStoreMixin, SqlOutboxMixin, SqlClusterMixin):
    """Durable record of executions, scheduled work and stored job definitions in a SQL
    database."""

    def __init__(
        self,
        url: str,
        *,
        owner: str | None = None,
        lease_seconds: float = 300,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.owner = owner or default_owner()
        self.lease_seconds = lease_seconds
        self.max_output_chars = max_output_chars
        self._engine_options = dict(engine_options or {})
        self._engine: AsyncEngine | None = None
        self._readers: async_sessionmaker[AsyncSession] | None = None
        self._writers: async_sessionmaker[AsyncSession] | None = None
        self._writer_engine: AsyncEngine | None = None
        # PostgreSQL (asyncpg): history batches of one statement, in autocommit.
        self._autocommit_engine: AsyncEngine | None = None
        self._history = GroupCommitWriter(self._write_history_rows)
        # SQLite: history batches are written by the standard sqlite3 driver in a thread of
        # their own, one thread hop per batch instead of one per statement through aiosqlite.
        self._sync_writer: Engine | None = None
        self._sync_thread: ThreadPoolExecutor | None = None
        # The connection that thread keeps (a checkout and return per batch cost ~60 us).
        self._sync_conn: Connection | None = None
        # SQLite file: WAL checkpoints in a thread of their own, not in the commits.
        self._checkpointer: WalCheckpointer | None = None
        # Claim attempt of each execution this store's node took from a scheduled run: with
        # the owner, the fence of its history writes (executions started here have 0).
        self._fences: dict[str, tuple[str, int]] = {}

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the engine and check the database answers and has been migrated."""
        if self._engine is not None:
            return
        sync_engine = sync_sqlite_engine(self.url, autocheckpoint=False)
        engine = create_engine(self.url, self._engine_options, autocheckpoint=sync_engine is None)
        try:
            async with engine.connect() as conn:
                has_tables = await conn.run_sync(
                    lambda sync_conn: inspect(sync_conn).has_table(JobExecutionV2.__tablename__)
                )
            if not has_tables:
                raise SchemaMissingError(engine.url.render_as_string(hide_password=True))
        except BaseException:
            await engine.dispose()
            if sync_engine is not None:
                sync_engine.dispose()
            raise
        self._engine = engine
        self._readers = async_sessionmaker(engine, expire_on_commit=False)
        self._writer_engine = engine.execution_options(**{SQLITE_IMMEDIATE: True})
        self._writers = async_sessionmaker(self._writer_engine, expire_on_commit=False)
        if engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg":
            self._autocommit_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._history = GroupCommitWriter(self._write_history_rows)
        if sync_engine is not None:
            self._sync_writer = sync_engine.execution_options(**{SQLITE_IMMEDIATE: True})
            self._sync_thread = ThreadPoolExecutor(1, thread_name_prefix="history-writer")
            self._checkpointer = WalCheckpointer(sync_engine.raw_connection)
            self._checkpointer.start()

    async def __aenter__(self) -> SqlExecutionStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Write what is queued, then dispose of the engine (its connections); the store
        can be opened again."""
        if self._engine is not None:
            await self._history.close()
        engine, self._engine = self._engine, None
        self._readers = self._writers = None
        self._writer_engine = self._autocommit_engine = None
        sync_writer, self._sync_writer = self._sync_writer, None
        thread, self._sync_thread = self._sync_thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(thread, self._release_sync_conn)
            thread.shutdown(wait=True)
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.close)
        if sync_writer is not None:
            sync_writer.engine.dispose()
        if engine is not None:
            await engine.dispose()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreNotOpenError()
        return self._engine

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        if self._readers is None:
            raise StoreNotOpenError()
        await self._barrier()
        async with self._readers.begin() as session:
            yield session

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        if self._writers is None:
            raise StoreNotOpenError()
        await self._barrier()
        async with self._writers.begin() as session:
            yield session

    async def _barrier(self) -> None:
        """Wait for the history submitted so far, except while the database is unreachable
        (the writer keeps those rows until it is back): then go on after a few seconds, and
        the call itself meets the outage."""
        try:
            async with asyncio.timeout(BARRIER_WAIT_SECONDS):
                await self._history.barrier()
        except TimeoutError:
            pass

    async def _write_history_rows(self, rows: Sequence[QueuedRow]) -> None:
        """One transaction of the group-commit writer."""
        if self._writer_engine is None:
            raise StoreNotOpenError()
        groups = history_groups([(row.kind, row.params) for row in rows])
        if self._sync_writer is not None and self._sync_thread is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._sync_thread, self._write_history_sync, groups)
            return
        if len(groups) == 1 and self._autocommit_engine is not None:
            # One statement: asyncpg's executemany is atomic by itself, so it goes without
            # the BEGIN and COMMIT round trips.
            async with self._autocommit_engine.connect() as conn:
                await write_history(conn, groups)
            return
        async with self._writer_engine.begin() as conn:
            await write_history(conn, groups)

    def _write_history_sync(self, groups: list[HistoryGroup]) -> None:
        conn = self._sync_conn
        if conn is None:
            assert self._sync_writer is not None
            conn = self._sync_conn = self._sync_writer.connect()
        assert self._checkpointer is not None
        with self._checkpointer.writing(), conn.begin():
            write_history_sync(conn, groups)

    def _release_sync_conn(self) -> None:
        conn, self._sync_conn = self._sync_conn, None
        if conn is not None:
            conn.close()

    async def _submit(
        self, key: tuple[str, ...], kind: str, params: dict[str, Any], durable: bool
    ) -> None:
        if self._engine is None:
            raise StoreNotOpenError()
        done = self._history.submit(key, kind, params, wait=durable)
        if done is not None:
            await done

    def _fence(self, execution_id: str) -> tuple[str, int]:
        """(owner, claim attempt) that ``execution_id``'s writes must still match: the claim
        this store made, or (this node, 0) for executions it created itself."""
        return self._fences.get(execution_id) or (self.owner, 0)

    async def flush(self) -> None:
        """Wait until every history write submitted so far is in the database."""
        await self._history.barrier()

    # -- execution history ----------------------------------------------------------------
    async def record_pending(
        self,
        execution_id: str,
        job: JobDefinition,
        *,
        trigger: str,
        scheduled_for: datetime | None = None,
        requested_by: str | None = None,
        durable: bool = True,
    ) -> None:
        """Create the execution row in PENDING state (no change if it already exists).
        With ``durable`` (the default) it is in the database when this returns; without, it
        is queued for the next group commit (later reads still see it)."""
        values = self._pending_values(execution_id, job, trigger, scheduled_for, requested_by)
        values["owner"] = self.owner  # held by this node from the start
        await self._submit(("pending", execution_id), "pending", pending_params(values), durable)

    async def record_job(self, result: JobExecutionResult, *, durable: bool = True) -> None:
        """Write the job row's current state (RUNNING, RETRYING or terminal); creates the row
        if ``record_pending`` was never called. Once it leaves PENDING its scheduled run, if
        any, is done and never fires again. ``durable`` as in ``record_pending``."""
        job = storable_job(result)
        eid = job.execution_id
        owner, fence = self._fence(eid)
        if job.status.is_terminal:
            self._fences.pop(eid, None)
        params = job_params(job_values(job), owner, fence)
        if job.status is not JobStatus.PENDING and (
            job.metadata.get("trigger") not in _UNSCHEDULED_TRIGGERS
        ):
            started = started_params(eid, owner, fence)
            await self._submit(("started", eid), "started", started, False)
        # Notifications of a terminal state: queued just before the job row, so both are
        # written in one batch transaction (nothing awaits in between).
        for outbox in await self._finished_outbox(result):
            await self._submit(("outbox", outbox["delivery_id"]), "outbox", outbox, False)
        await self._submit(("job", eid), "job", params, durable)

    async def record_step(
        self, execution_id: str, step: StepExecutionResult, attempt: int, *, durable: bool = True
    ) -> None:
        """Write one step row keyed by (execution_id, attempt, step_id, run). ``durable`` as in
        ``record_pending``."""
        values = step_values(storable_step(step, self.max_output_chars))
        key = ("step", execution_id, str(attempt), values["step_id"], str(values["run"]))
        owner, fence = self._fence(execution_id)
        params = step_params(execution_id, attempt, values, owner, fence)
        await self._submit(key, "step", params, durable)

    async def get_execution(self, execution_id: str) -> JobExecutionResult | None:
        """The execution with its attempts and the steps of its latest attempt (in start
        order) as ``steps``, or None."""
        async with self._read() as session:
            repo = ExecutionRepository(session)
            row = await repo.get(execution_id)
            if row is None:
                return None
            steps = await repo.all_steps([execution_id])
            return job_from_row(row, steps[execution_id])

    async def list_executions(self, query: ExecutionQuery) -> ExecutionPage:
        """Executions matching ``query``, newest first, with a keyset ``next_cursor``."""
        check_limit(query.limit)
        after = decode_cursor(query.cursor) if query.cursor else None
        async with self._read() as session:
            repo = ExecutionRepository(session)
            rows = await repo.page(
                job_id=query.job_id,
                status=query.status.value if query.status is not None else None,
                timezone=query.timezone,
                started_after=query.started_after,
                started_before=query.started_before,
                after_key=after,
                limit=query.limit + 1,
            )
            page = rows[: query.limit]
            steps = await repo.all_steps([r.execution_id for r in page])
        items = [job_from_row(r, steps[r.execution_id]) for r in page]
        more = len(rows) > query.limit
        cursor = encode_cursor(page[-1].created_at, page[-1].execution_id) if more else None
        return ExecutionPage(items, cursor)

    # -- scheduled work -------------------------------------------------------------------
    async def add_scheduled_run(
        self, run: ScheduledRun, *, settled: tuple[JobStatus, str] | None = None
    ) -> None:
        """Persist a run waiting for its time and its PENDING history row, in one
        transaction. A second run fired by a recurring schedule for the same job and time
        raises ``DuplicateScheduledRunError`` and writes nothing."""
        schedule_key = run.fire_key
        try:
            async with self._write() as session:
                await self._insert_run(session, run)
                if settled is None:
                    await NodeRepository(session).notify("runs")
                else:  # a fire that will not run: settled before any claimer sees it
                    status, reason = settled
                    await ScheduledRunRepository(session).set_status(
                        run.execution_id, RUN_DONE, from_statuses=(RUN_PENDING,)
                    )
                    row = await ExecutionRepository(session).settle(
                        run.execution_id, status, reason, from_statuses=(JobStatus.PENDING.value,)
                    )
                    if row is not None:
                        await self._missed_outbox(session, row, reason)
        except IntegrityError:
            if schedule_key is not None:
                async with self._read() as session:
                    if await ScheduledRunRepository(session).fire_exists(
                        run.job.job_id, schedule_key
                    ):
                        raise DuplicateScheduledRunError(
                            run.job.job_id, run.scheduled_for
                        ) from None
            raise

    async def fires_with_runs(self, job_id: str, start: datetime, end: datetime) -> set[datetime]:
        """``scheduled_for`` (UTC) in [start, end) of the executions of ``job_id`` that ran
        or are still to run (not those recorded missed or cancelled before they started)."""
        async with self._read() as session:
            return await ExecutionRepository(session).fires_with_runs(job_id, start, end)

    async def add_scheduled_runs(self, runs: Sequence[ScheduledRun]) -> None:
        """Persist many one-off runs waiting for their time and their PENDING history rows
        in one transaction: all of them or none. Runs keyed by their fire (a recurring
        schedule's) go one at a time through ``add_scheduled_run``."""
        if not runs:
            return
        keyed = [run.execution_id for run in runs if run.fire_key is not None]
        if keyed:
            raise ValueError(f"runs keyed by their fire go through add_scheduled_run: {keyed}")
        histories, waiting = [], []
        for run in runs:
            history, row = self._run_rows(run)
            histories.append(history)
            waiting.append(row)
        async with self._write() as session:
            await ExecutionRepository(session).insert_pending_many(histories)
            await ScheduledRunRepository(session).insert_many(waiting)
            await NodeRepository(session).notify("runs")

    async def _insert_run(self, session: AsyncSession, run: ScheduledRun) -> None:
        """The PENDING history row and the waiting run of ``run``, in ``session``."""
        history, row = self._run_rows(run)
        await ExecutionRepository(session).insert_pending(history)
        await ScheduledRunRepository(session).insert(row)

    def _run_rows(self, run: ScheduledRun) -> tuple[dict[str, Any], dict[str, Any]]:
        """The values of the PENDING history row and of the waiting run of ``run``."""
        values = self._pending_values(
            run.execution_id,
            run.job,
            run.trigger,
            run.scheduled_for,
            run.requested_by,
            run.metadata,
        )
        values["attempt"] = run.attempt
        return values, {
            "execution_id": run.execution_id,
            "job_id": run.job.job_id,
            "job_definition_json": dump_json(run.job.shared_dict()),
            "scheduled_for": run.scheduled_for,
            "schedule_key": run.fire_key,
            "timezone": run.job.timezone,
            "trigger": run.trigger,
            "requested_by": fit_text(run.requested_by, 100),
            "attempt": run.attempt,
            "metadata_json": dump_json(run.metadata) if run.metadata else None,
        }

    async def due_scheduled_runs(self, until: datetime, limit: int) -> list[ScheduledRun]:
        """Unclaimed runs with ``scheduled_for <= until``, earliest first."""
        async with self._read() as session:
            rows = await ScheduledRunRepository(session).due(until, limit)
        return [run_from_row(r) for r in rows]

    async def claim_scheduled_run(self, execution_id: str, owner: str) -> bool:
        """Atomically take a pending run for ``owner``; False when gone, cancelled or
        claimed by another."""
        async with self._write() as session:
            claimed = await ScheduledRunRepository(session).claim(
                owner, self.lease_seconds, execution_id=execution_id
            )
        for row in claimed:
            self._fences[row.execution_id] = (owner, row.attempt)
        return bool(claimed)

    async def claim_due_runs(
        self, until: datetime, limit: int, owner: str | None = None
    ) -> list[ScheduledRun]:
        """Claim up to ``limit`` runs due by ``until`` in one statement (``FOR UPDATE SKIP
        LOCKED`` on PostgreSQL); each returned run carries its new claim ``attempt``."""
        async with self._write() as session:
            rows = await ScheduledRunRepository(session).claim(
                owner or self.owner, self.lease_seconds, until=until, limit=limit
            )
        for row in rows:
            self._fences[row.execution_id] = (owner or self.owner, row.attempt)
        return [run_from_row(r) for r in rows]

    async def mark_run_dispatched(self, execution_id: str) -> None:
        """A claimed run is handed to its queue: done, durably (group committed with the
        other runs firing now). After a crash its PENDING execution is recorded
        interrupted (``find_running(include_queued=True)``), never run a second time."""
        key = ("started", execution_id)
        params = started_params(execution_id, *self._fence(execution_id))
        await self._submit(key, "started", params, True)

    async def cancel_scheduled_run(
        self,
        execution_id: str,
        *,
        cancelled_by: str | None = None,
        claimed_by: str | None = None,
    ) -> bool:
        """Cancel a pending run, or one ``claimed_by`` holds without having started it
        (history row CANCELLED, "cancelled before it started", with ``cancelled_by`` in its
        metadata when given); False otherwise."""
        extra = {"cancelled_by": cancelled_by} if cancelled_by is not None else None
        if claimed_by is not None:
            self._fences.pop(execution_id, None)
        return await self._settle_run(
            execution_id,
            RUN_CANCELLED,
            JobStatus.CANCELLED,
            CANCELLED_BEFORE_START,
            extra,
            claimed_by=claimed_by,
        )

    async def mark_missed(
        self, execution_id: str, reason: str, status: JobStatus = JobStatus.FAILED
    ) -> bool:
        """Settle a pending run that will not run (e.g. misfired while the service was
        down): history row ``status`` with ``reason``; False when it is not pending."""
        return await self._settle_run(execution_id, RUN_DONE, status, reason)

    async def _settle_run(
        self,
        execution_id: str,
        run_status: str,
        status: JobStatus,
        reason: str,
        metadata: dict[str, Any] | None = None,
        *,
        claimed_by: str | None = None,
    ) -> bool:
        async with self._write() as session:
            runs = ScheduledRunRepository(session)
            taken = await runs.set_status(execution_id, run_status, from_statuses=(RUN_PENDING,))
            if not taken and claimed_by is not None:
                taken = await runs.set_status(
                    execution_id, run_status, from_statuses=(RUN_CLAIMED,), owner=claimed_by
                )
            if taken:
                settled = await ExecutionRepository(session).settle(
                    execution_id, status, reason, from_statuses=(JobStatus.PENDING.value,)
                )
                if settled is not None and metadata:
                    settled.metadata_json = dump_json(
                        {**load_json_object(settled.metadata_json), **metadata}
                    )
                if settled is not None and run_status == RUN_DONE:  # missed or skipped
                    await self._missed_outbox(session, settled, reason)
        return taken

    async def count_scheduled_runs(self, limit: int | None = None) -> int:
        """Number of runs still waiting (pending), at most ``limit`` when given."""
        async with self._read() as session:
            return await ScheduledRunRepository(session).count_pending(limit)

    async def next_scheduled_time(self) -> datetime | None:
        """``scheduled_for`` of the earliest pending run."""
        async with self._read() as session:
            return await ScheduledRunRepository(session).next_time()

    # -- recovery -------------------------------------------------------------------------
    async def requeue_claimed_runs(
        self,
        *,
        owner: str | None = None,
        expired_only: bool = True,
        execution_ids: Sequence[str] | None = None,
    ) -> int:
        """Claimed runs whose execution never started (history row still PENDING) become
        pending again: those of ``owner`` if given, only with an expired lease unless
        ``expired_only`` is False, only ``execution_ids`` when given. Returns how many."""
        async with self._write() as session:
            count = await ScheduledRunRepository(session).requeue_claimed(
                owner=owner, expired_only=expired_only, execution_ids=execution_ids
            )
            if count:
                await NodeRepository(session).notify("runs")
        for execution_id in execution_ids or ():
            self._fences.pop(execution_id, None)
        return count

    async def find_running(
        self, *, owner: str | None = None, include_queued: bool = False
    ) -> list[JobExecutionResult]:
        """Executions recorded RUNNING or RETRYING (of ``owner`` if given), oldest first;
        with ``include_queued`` also PENDING ones that are not scheduled runs (they waited
        in a memory queue). At startup these are the runs a dead process left behind."""
        async with self._read() as session:
            repo = ExecutionRepository(session)
            rows = await repo.in_flight(owner=owner, include_queued=include_queued)
            steps = await repo.latest_steps([r.execution_id for r in rows])
        return [job_from_row(r, steps[r.execution_id]) for r in rows]

    async def mark_interrupted(
        self,
        execution_id: str,
        reason: str = "interrupted",
        *,
        status: JobStatus = JobStatus.FAILED,
        owner: str | None = None,
    ) -> bool:
        """End a non-terminal execution with ``status`` and ``reason`` (its unfinished
        steps FAILED); only if owned by ``owner`` when given. False if it already ended."""
        unfinished = tuple(s.value for s in JobStatus if not s.is_terminal)
        notices = await self._interrupted_outbox(execution_id, reason, status)
        async with self._write() as session:
            row = await ExecutionRepository(session).settle(
                execution_id, status, reason, from_statuses=unfinished, owner=owner
            )
            if row is not None:
                await ScheduledRunRepository(session).mark_started(execution_id)
                await self._insert_outbox(session, notices)  # failure notices, same transaction
        return row is not None

    async def get_job_definition(self, execution_id: str) -> JobDefinition | None:
        """The definition an execution was created with (to run or retry it), or None."""
        async with self._read() as session:
            data = await ExecutionRepository(session).definition_json(execution_id)
        return definition_from_json(data) if data else None

    async def purge_history(self, older_than: datetime, *, batch_size: int = 500) -> int:
        """Delete finished executions (and their steps and runs) that ended before
        ``older_than``, in batches of short transactions. Returns how many."""
        total = 0
        while True:
            async with self._write() as session:
                repo = ExecutionRepository(session)
                ids = await repo.finished_before(older_than, batch_size)
                total += await repo.delete(ids)
            if len(ids) < batch_size:
                return total

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _pending_values(
        execution_id: str,
        job: JobDefinition,
        trigger: str,
        scheduled_for: datetime | None,
        requested_by: str | None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        pending = storable_job(
            JobExecutionResult(
                execution_id=execution_id,
                job_id=job.job_id,
                job_name=job.job_name,
                status=JobStatus.PENDING,
                timezone=job.timezone,
                metadata=pending_metadata(trigger, scheduled_for, requested_by, extra),
            )
        )
        return {
            "execution_id": execution_id,
            "job_id": pending.job_id,
            "job_name": fit(pending.job_name, 255),
            "timezone": pending.timezone,
            "metadata_json": dump_json(pending.metadata),
            "trigger": trigger,
            "scheduled_for": scheduled_for,
            "requested_by": fit_text(requested_by, 100),
            "job_definition_json": dump_json(job.shared_dict()),
        }
