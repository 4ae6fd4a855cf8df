"""The ``JobStore`` port (stored job definitions) of ``SqlExecutionStore``.

Kept apart from the execution history to keep modules small; ``SqlExecutionStore`` mixes it
in, so both ports share one engine. Every call is one short transaction, and every write
that depends on what is stored (version, next fire) is one conditional statement: of two
replicas racing, exactly one wins on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy import String, bindparam, column, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import TableValuedAlias

from app.domain.jobs import (
    JobExistsError,
    JobNotFoundError,
    JobPage,
    JobQuery,
    JobsExistError,
    JobsWritten,
    JobWrite,
    OnConflict,
    StoredJob,
    VersionConflictError,
    decode_job_cursor,
    encode_job_cursor,
)
from app.domain.models import JobDefinition, JobExecutionResult
from app.domain.records import check_limit
from app.domain.timeutil import utc_now
from app.persistence.cluster import NodeRepository
from app.persistence.convert import (
    definition_json,
    job_columns,
    job_from_row,
    stored_job_from_row,
)
from app.persistence.models import JobExecutionV2
from app.persistence.repositories import JobRepository


class SqlJobStoreMixin:
    """Stored job definitions in ``jobs_v2``; ``version`` starts at 1 and goes up by one
    on every ``update_job``; ``advance_job`` changes only the fire instants."""

    def _read(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError  # provided by SqlExecutionStore

    def _write(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError  # provided by SqlExecutionStore

    async def create_job(self, job: JobDefinition, *, next_fire_at: datetime | None) -> StoredJob:
        """Store a new job at version 1 with created_at = updated_at = now (in the row and
        in its JSON; ``job`` itself is not changed). ``JobExistsError`` when the job_id is
        taken."""
        now = utc_now()
        values = {
            **job_columns(job),
            "job_id": job.job_id,
            "definition_json": definition_json(job, created_at=now, updated_at=now),
            "version": 1,
            "next_fire_at": next_fire_at,
            "last_fire_at": None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self._write() as session:
                row = await JobRepository(session).insert(values)
                await NodeRepository(session).notify("jobs")  # wake the other nodes
                return stored_job_from_row(row)
        except IntegrityError:
            async with self._read() as session:
                if await JobRepository(session).version(job.job_id) is not None:
                    raise JobExistsError(job.job_id) from None
            raise

    async def write_jobs(
        self, writes: Sequence[JobWrite], *, on_conflict: OnConflict
    ) -> JobsWritten:
        """Store several jobs in one transaction (all or none, see ``JobStore``). The ids
        already stored are read in the transaction; a job another replica creates between
        that read and the insert fails the insert, the transaction rolls back, and the
        answer is ``JobsExistError`` naming it whatever ``on_conflict`` says (nothing was
        written)."""
        ids = [w.job.job_id for w in writes]
        if len(set(ids)) != len(ids):
            raise ValueError("write_jobs takes distinct job_ids")
        now = utc_now()
        written = JobsWritten()
        taken: set[str] = set()
        try:
            async with self._write() as session:
                repo = JobRepository(session)
                taken = await repo.existing_ids(ids)
                if taken and on_conflict is OnConflict.FAIL:
                    raise JobsExistError([i for i in ids if i in taken])
                for write in writes:
                    job = write.job
                    if job.job_id in taken and on_conflict is OnConflict.SKIP:
                        written.skipped.append(job.job_id)
                        continue
                    created_at = None
                    if job.job_id in taken:
                        created_at = await repo.update(
                            job.job_id,
                            None,
                            {
                                **job_columns(job),
                                "next_fire_at": write.next_fire_at,
                                "updated_at": now,
                            },
                        )
                    if created_at is not None:
                        row = await repo.set_definition_json(
                            job.job_id,
                            definition_json(job, created_at=created_at, updated_at=now),
                        )
                        written.replaced.append(stored_job_from_row(row))
                        continue
                    row = await repo.insert(
                        {
                            **job_columns(job),
                            "job_id": job.job_id,
                            "definition_json": definition_json(job, created_at=now, updated_at=now),
                            "version": 1,
                            "next_fire_at": write.next_fire_at,
                            "last_fire_at": None,
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                    written.created.append(stored_job_from_row(row))
                await NodeRepository(session).notify("jobs")
        except IntegrityError:
            # Only a job_id that appeared since the transaction read them is a conflict;
            # anything else the database refused is its own error.
            async with self._read() as session:
                appeared = await JobRepository(session).existing_ids(ids) - taken
            if appeared:
                raise JobsExistError([i for i in ids if i in appeared]) from None
            raise
        return written

    async def get_job(self, job_id: str) -> StoredJob | None:
        """The stored job or None."""
        async with self._read() as session:
            row = await JobRepository(session).get(job_id)
            return stored_job_from_row(row) if row is not None else None

    async def list_jobs(self, query: JobQuery) -> JobPage:
        """Jobs ordered by job_id (code point order), filtered by enabled/timezone, with a
        keyset ``next_cursor`` (None on the last page)."""
        check_limit(query.limit)
        after = decode_job_cursor(query.cursor) if query.cursor else None
        async with self._read() as session:
            rows = await JobRepository(session).page(
                enabled=query.enabled,
                timezone=query.timezone,
                after_job_id=after,
                limit=query.limit + 1,
            )
            page = [stored_job_from_row(r) for r in rows[: query.limit]]
        more = len(rows) > query.limit
        return JobPage(page, encode_job_cursor(page[-1].job_id) if more else None)

    async def update_job(
        self, job: JobDefinition, *, expected_version: int | None, next_fire_at: datetime | None
    ) -> StoredJob:
        """Replace a job's definition: created_at kept from the row, updated_at now,
        version + 1, ``next_fire_at`` set (``last_fire_at`` kept). ``JobNotFoundError``;
        ``VersionConflictError`` (nothing written) when ``expected_version`` is given and
        the row is at another version."""
        now = utc_now()
        async with self._write() as session:
            repo = JobRepository(session)
            # The conditional UPDATE decides (and locks the row); the JSON, which carries
            # the row's created_at, is written second in the same transaction.
            created_at = await repo.update(
                job.job_id,
                expected_version,
                {**job_columns(job), "next_fire_at": next_fire_at, "updated_at": now},
            )
            if created_at is None:
                actual = await repo.version(job.job_id)
                if actual is None or expected_version is None:
                    raise JobNotFoundError(job.job_id)
                raise VersionConflictError(job.job_id, expected_version, actual)
            row = await repo.set_definition_json(
                job.job_id, definition_json(job, created_at=created_at, updated_at=now)
            )
            await NodeRepository(session).notify("jobs")
            return stored_job_from_row(row)

    async def delete_job(self, job_id: str, *, expected_version: int | None = None) -> bool:
        """Delete the definition; its executions stay in the history. False when absent;
        ``VersionConflictError`` (nothing deleted) on a stale ``expected_version``."""
        async with self._write() as session:
            repo = JobRepository(session)
            if await repo.delete(job_id, expected_version):
                await NodeRepository(session).notify("jobs")
                return True
            if expected_version is None:
                return False
            actual = await repo.version(job_id)
            if actual is None:
                return False
            raise VersionConflictError(job_id, expected_version, actual)

    async def due_jobs(self, until: datetime, limit: int) -> list[StoredJob]:
        """Enabled jobs with ``next_fire_at <= until``, earliest first (then by job_id)."""
        async with self._read() as session:
            rows = await JobRepository(session).due(until, limit)
            return [stored_job_from_row(r) for r in rows]

    async def advance_job(
        self,
        job_id: str,
        *,
        expected_next_fire_at: datetime,
        next_fire_at: datetime | None,
        last_fire_at: datetime,
    ) -> bool:
        """Compare-and-set the job's next fire: only if it is still
        ``expected_next_fire_at``; whether it changed. Version and updated_at stay."""
        async with self._write() as session:
            return await JobRepository(session).advance(
                job_id,
                expected_next_fire_at=expected_next_fire_at,
                next_fire_at=next_fire_at,
                last_fire_at=last_fire_at,
            )

    async def next_job_fire_time(self) -> datetime | None:
        """Earliest ``next_fire_at`` among enabled jobs."""
        async with self._read() as session:
            return await JobRepository(session).next_fire_time()

    async def latest_executions(self, job_ids: Sequence[str]) -> dict[str, JobExecutionResult]:
        """The newest execution (highest created_at, then execution_id: the listing's
        order) of each job id that has one, without steps. Two statements whatever the
        number of ids, each id's newest found through the (job_id, created_at) index."""
        wanted = list(dict.fromkeys(job_ids))
        if not wanted:
            return {}
        async with self._read() as session:
            rows = await _latest_execution_rows(session, wanted)
        return {row.job_id: job_from_row(row, []) for row in rows}


# -- queries of latest_executions -----------------------------------------------------------
def _text_list(session: AsyncSession, values: list[str]) -> TableValuedAlias:
    """``values`` as a one-column table (column ``value``) bound as ONE parameter, so the
    statement text, and the prepared statement, is the same for any number of values:
    ``unnest`` of an array on PostgreSQL, ``json_each`` of a JSON array on SQLite (JSON
    functions are built into SQLite by default since 3.38)."""
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam("values", values, type_=postgresql.ARRAY(String))
        return func.unnest(array).table_valued(column("value", String)).render_derived()
    text = bindparam("values", json.dumps(values), type_=String)
    return func.json_each(text).table_valued(column("value", String))


async def _latest_execution_rows(session: AsyncSession, job_ids: list[str]) -> list[JobExecutionV2]:
    """First the newest execution_id of every job id, each one a correlated subquery
    reading the top of that job's (job_id, created_at) index (one index probe per id, not
    a scan of the history); then those rows by primary key."""
    ids = _text_list(session, job_ids)
    k = JobExecutionV2.__table__.alias("k")
    newest = (
        select(k.c.execution_id)
        .where(k.c.job_id == ids.c.value)
        .order_by(k.c.created_at.desc(), k.c.execution_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    found = await session.scalars(select(newest).select_from(ids))
    execution_ids = [e for e in found if e is not None]
    if not execution_ids:
        return []
    wanted = _text_list(session, execution_ids)
    stmt = select(JobExecutionV2).where(JobExecutionV2.execution_id.in_(select(wanted.c.value)))
    return list(await session.scalars(stmt))
