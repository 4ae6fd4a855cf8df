"""``JobStore.write_jobs`` (several jobs in one transaction, all or none) on every backend:
the in-memory store, the SQL store on SQLite and on PostgreSQL. On the SQL backends a
database trigger that refuses one row proves the transaction is all or none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from app.domain.jobs import JobsExistError, JobWrite, OnConflict
from app.domain.models import JobDefinition
from tests.integration.conftest import SQL_BACKENDS, StoreFactory

T0 = datetime(2030, 3, 10, 12, 0, tzinfo=UTC)


def job(job_id: str, name: str = "") -> JobDefinition:
    return JobDefinition(
        job_id=job_id,
        job_name=name or f"Job {job_id}",
        steps=[{"step_id": "s", "type": "shell", "script": "echo hi"}],
        schedule_config={"type": "cron", "expression": "0 1 * * *"},
    )


def writes(*job_ids: str, name: str = "") -> list[JobWrite]:
    return [JobWrite(job(j, name), T0 + timedelta(minutes=i)) for i, j in enumerate(job_ids)]


async def test_all_are_created_with_their_next_fires(store: Any) -> None:
    written = await store.write_jobs(writes("a", "b", "c"), on_conflict=OnConflict.FAIL)

    assert [s.job_id for s in written.created] == ["a", "b", "c"]
    assert written.replaced == [] and written.skipped == []
    for i, job_id in enumerate("abc"):
        stored = await store.get_job(job_id)
        assert stored.version == 1
        assert stored.next_fire_at == T0 + timedelta(minutes=i)
        assert stored.job.created_at is not None


async def test_fail_names_every_taken_id_and_writes_nothing(store: Any) -> None:
    await store.write_jobs(writes("b", "d"), on_conflict=OnConflict.FAIL)

    with pytest.raises(JobsExistError) as info:
        await store.write_jobs(writes("a", "b", "c", "d"), on_conflict=OnConflict.FAIL)

    assert info.value.job_ids == ["b", "d"]
    assert await store.get_job("a") is None and await store.get_job("c") is None


async def test_skip_leaves_stored_jobs_as_they_are(store: Any) -> None:
    await store.write_jobs(writes("b", name="first"), on_conflict=OnConflict.FAIL)

    written = await store.write_jobs(writes("a", "b", name="second"), on_conflict=OnConflict.SKIP)

    assert [s.job_id for s in written.created] == ["a"] and written.skipped == ["b"]
    kept = await store.get_job("b")
    assert kept.job.job_name == "first" and kept.version == 1


async def test_replace_keeps_created_at_and_last_fire(store: Any) -> None:
    [first] = (
        await store.write_jobs(writes("b", name="first"), on_conflict=OnConflict.FAIL)
    ).created
    assert await store.advance_job(
        "b", expected_next_fire_at=first.next_fire_at, next_fire_at=T0, last_fire_at=T0
    )

    written = await store.write_jobs(
        writes("a", "b", name="second"), on_conflict=OnConflict.REPLACE
    )

    assert [s.job_id for s in written.created] == ["a"]
    [replaced] = written.replaced
    assert replaced.job_id == "b" and replaced.version == 2
    stored = await store.get_job("b")
    assert stored.job.job_name == "second" and stored.version == 2
    assert stored.job.created_at == first.job.created_at
    assert stored.next_fire_at == T0 + timedelta(minutes=1)
    assert stored.last_fire_at == T0


async def test_distinct_job_ids_are_required(store: Any) -> None:
    with pytest.raises(ValueError, match="distinct"):
        await store.write_jobs(writes("a", "a"), on_conflict=OnConflict.FAIL)
    assert await store.get_job("a") is None


_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON jobs_v2 WHEN NEW.job_id = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.job_id = 'boom' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON jobs_v2 FOR EACH ROW "
        "EXECUTE FUNCTION refuse_boom()",
    ],
}
_DROP = {
    "sqlite": ["DROP TRIGGER refuse_boom"],
    "postgresql": ["DROP TRIGGER refuse_boom ON jobs_v2", "DROP FUNCTION refuse_boom()"],
}


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_a_row_the_database_refuses_rolls_back_every_job(
    backend: str, make_store: StoreFactory
) -> None:
    store = await make_store(backend)
    await store.write_jobs(writes("old", name="first"), on_conflict=OnConflict.FAIL)
    async with store.engine.begin() as conn:
        for sql in _TRIGGERS[backend]:
            await conn.execute(text(sql))
    try:
        with pytest.raises(Exception, match="refused by a trigger"):
            await store.write_jobs(
                writes("a", "old", "boom", "c", name="second"), on_conflict=OnConflict.REPLACE
            )
    finally:
        async with store.engine.begin() as conn:
            for sql in _DROP[backend]:
                await conn.execute(text(sql))

    assert await store.get_job("a") is None and await store.get_job("c") is None
    old = await store.get_job("old")
    assert old.job.job_name == "first" and old.version == 1
