"""Schedule health on every store: ok, failing after V2_FAILING_AFTER failed runs, overdue
when the schedule stopped firing (with one `missed` notification to a real receiver), and
disabled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.api.observability import build_observability
from app.domain import JobDefinition
from app.engine import NewExecutionEngine
from tests.integration.test_notifications import SECRET, settings
from tests.support.receivers import wait_until, webhook_receiver


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


async def test_health_ok_failing_overdue_disabled_and_one_missed_notice(store: Any) -> None:
    clock = Clock()
    # The recurring loop polls hourly: moving the clock on makes the schedule look stuck.
    engine = NewExecutionEngine(
        store=store, clock=clock, poll_interval_seconds=3600, misfire_grace_seconds=60
    )
    observed = build_observability(engine, settings(failing_after=2))
    health = observed.health
    assert health is not None
    await engine.start()
    observed.start()
    try:
        async with webhook_receiver(secret=SECRET) as receiver:
            rules = [{"on": ["missed"], "webhook": {"url": receiver.url, "secret_name": "ops"}}]
            definition = JobDefinition(
                job_id="hourly",
                job_name="Hourly",
                steps=[{"step_id": "s", "type": "shell", "script": "exit 1"}],
                schedule_config={"type": "interval", "every_seconds": 3600},
                notifications=rules,
            )
            assert engine.jobs is not None
            stored = await engine.jobs.create(definition)
            assert await health.health(stored) == "ok"
            assert await health.overdue() == []

            for expected in ("ok", "failing"):  # two failed runs: failing
                await engine.execute_job_now(definition)
                assert (await health.health_of([stored]))["hourly"] == expected
            assert await health.health(stored) == "failing"

            clock.offset = timedelta(hours=2)  # next_fire_at is an hour past, beyond grace
            assert await health.health(stored) == "overdue"
            [overdue] = await health.overdue()
            assert overdue.job_id == "hourly"
            assert overdue.late_seconds > 3600
            await wait_until(lambda: len(receiver.delivered()) == 1, what="missed notice")
            body = receiver.delivered()[0].json
            assert body["event"] == "missed"
            assert body["reason"].startswith("overdue: the fire due at")
            assert body["execution"]["execution_id"] is None
            # Checked again on later passes: still one notice for this stuck instant.
            before = observed.dispatcher.last_pass if observed.dispatcher else None
            await wait_until(
                lambda: (
                    observed.dispatcher is not None
                    and observed.dispatcher.last_pass is not None
                    and before is not None
                    and observed.dispatcher.last_pass > before + 1.2
                ),
                timeout=5,
                what="two more overdue checks",
            )
            assert len(receiver.requests) == 1

            disabled = await engine.jobs.set_enabled("hourly", False, expected_version=None)
            assert await health.health(disabled) == "disabled"
            assert await health.overdue() == []
    finally:
        await observed.stop()
        await engine.stop(wait_for_jobs=False)
