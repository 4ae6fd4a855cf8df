"""GroupCommitWriter on its own: batching, coalescing, barriers, failure isolation, close.

The write function here records what it is given and can be held open with an event, so
every ordering below is forced, not timed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from app.persistence.writer import GroupCommitWriter, QueuedRow


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[tuple[str, dict[str, Any]]]] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.bad: set[str] = set()

    async def write(self, rows: Sequence[QueuedRow]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if any(r.params.get("id") in self.bad for r in rows):
            raise ValueError("bad row")
        self.batches.append([(r.kind, dict(r.params)) for r in rows])


@pytest.fixture
def sink() -> Sink:
    return Sink()


async def test_rows_submitted_in_one_turn_share_one_batch_in_kind_order(sink: Sink) -> None:
    writer = GroupCommitWriter(sink.write)
    writer.submit(("step", "a", "s1"), "step", {"id": "a/s1"}, wait=False)
    writer.submit(("job", "a"), "job", {"id": "a"}, wait=False)
    writer.submit(("pending", "a"), "pending", {"id": "a"}, wait=False)
    writer.submit(("started", "a"), "started", {"id": "a"}, wait=False)
    await writer.barrier()
    assert [[kind for kind, _ in batch] for batch in sink.batches] == [
        ["pending", "job", "step", "started"]
    ]
    assert writer.batches == 1 and writer.rows_written == 4
    await writer.close()


async def test_a_newer_state_replaces_the_queued_one_and_keeps_created_at(sink: Sink) -> None:
    writer = GroupCommitWriter(sink.write)
    writer.submit(
        ("step", "a", "s1"), "step", {"id": "a", "v": "running", "created_at": 1}, wait=False
    )
    done = writer.submit(
        ("step", "a", "s1"), "step", {"id": "a", "v": "success", "created_at": 2}, wait=True
    )
    assert done is not None
    await done
    assert sink.batches == [[("step", {"id": "a", "v": "success", "created_at": 1})]]
    await writer.close()


async def test_barrier_waits_for_rows_queued_behind_a_batch_in_flight(sink: Sink) -> None:
    sink.gate = asyncio.Event()
    writer = GroupCommitWriter(sink.write)
    writer.submit(("job", "a"), "job", {"id": "a"}, wait=False)
    await sink.entered.wait()  # batch 1 is being written and held open
    writer.submit(("job", "b"), "job", {"id": "b"}, wait=False)
    barrier = asyncio.create_task(writer.barrier())
    await asyncio.sleep(0)
    assert not barrier.done()
    sink.gate.set()
    await barrier
    # Only returns once the row submitted before it (b, in the second batch) is written.
    assert [[p["id"] for _, p in batch] for batch in sink.batches] == [["a"], ["b"]]
    await writer.close()


async def test_barrier_on_an_idle_writer_returns_at_once(sink: Sink) -> None:
    writer = GroupCommitWriter(sink.write)
    assert writer.idle
    await writer.barrier()
    assert sink.batches == []


async def test_a_bad_row_fails_only_its_own_waiters(sink: Sink) -> None:
    sink.bad = {"x"}
    writer = GroupCommitWriter(sink.write)
    good = writer.submit(("job", "a"), "job", {"id": "a"}, wait=True)
    bad = writer.submit(("job", "x"), "job", {"id": "x"}, wait=True)
    other = writer.submit(("job", "b"), "job", {"id": "b"}, wait=True)
    assert good is not None and bad is not None and other is not None
    await good
    await other
    with pytest.raises(ValueError, match="bad row"):
        await bad
    # The batch failed as a whole, then each row was retried alone.
    assert [[p["id"] for _, p in batch] for batch in sink.batches] == [["a"], ["b"]]
    await writer.close()


async def test_an_unawaited_row_that_fails_is_logged(
    sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.bad = {"x"}
    writer = GroupCommitWriter(sink.write)
    writer.submit(("job", "x"), "job", {"id": "x", "execution_id": "x"}, wait=False)
    await writer.barrier()
    assert "a job history row of execution x could not be written" in caplog.text
    await writer.close()


async def test_close_writes_what_is_queued_then_refuses_more(sink: Sink) -> None:
    writer = GroupCommitWriter(sink.write)
    writer.submit(("job", "a"), "job", {"id": "a"}, wait=False)
    await writer.close()
    assert sink.batches == [[("job", {"id": "a"})]]
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(("job", "b"), "job", {"id": "b"}, wait=False)


async def test_a_cancelled_waiter_does_not_stop_its_row_being_written(sink: Sink) -> None:
    sink.gate = asyncio.Event()
    writer = GroupCommitWriter(sink.write)
    done = writer.submit(("job", "a"), "job", {"id": "a"}, wait=True)
    assert done is not None
    waiter = asyncio.ensure_future(done)
    await sink.entered.wait()
    waiter.cancel()
    sink.gate.set()
    await writer.barrier()
    assert sink.batches == [[("job", {"id": "a"})]]
    await writer.close()


async def test_rows_nobody_waits_for_linger_until_a_durable_write_comes(sink: Sink) -> None:
    writer = GroupCommitWriter(sink.write, linger_seconds=3600)
    writer.submit(("job", "a"), "job", {"id": "a", "v": "running"}, wait=False)
    writer.submit(("step", "a", "s"), "step", {"id": "a/s", "v": "running"}, wait=False)
    for _ in range(20):
        await asyncio.sleep(0)  # the writer task runs, and keeps lingering
    assert sink.batches == []
    writer.submit(("step", "a", "s"), "step", {"id": "a/s", "v": "success"}, wait=False)
    done = writer.submit(("job", "a"), "job", {"id": "a", "v": "success"}, wait=True)
    assert done is not None
    await done
    # One batch, and the RUNNING states were replaced in the queue before any write.
    assert sink.batches == [
        [("job", {"id": "a", "v": "success"}), ("step", {"id": "a/s", "v": "success"})]
    ]
    await writer.close()


async def test_a_barrier_cuts_the_linger_short(sink: Sink) -> None:
    writer = GroupCommitWriter(sink.write, linger_seconds=3600)
    writer.submit(("job", "a"), "job", {"id": "a"}, wait=False)
    await writer.barrier()
    assert sink.batches == [[("job", {"id": "a"})]]
    await writer.close()
