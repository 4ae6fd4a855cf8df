"""Notifications end to end on every store: real executions (shell steps), the outbox, the
delivery loop, a real HTTP receiver on loopback that checks the signature and an aiosmtpd
server; every event, retries with back-off, timeouts, no alert storms."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.api.observability import Observability, build_observability
from app.domain import JobDefinition, JobStatus
from app.engine import NewExecutionEngine
from app.settings import Settings
from tests.support.receivers import (
    WebhookReceiver,
    smtp_receiver,
    wait_until,
    webhook_receiver,
)

SECRET = "s3cret-for-tests"


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "poll_interval_seconds": 0.02,
        "webhook_allowed_hosts": ["127.0.0.1"],
        "notification_secrets": {"ops": SECRET},
        "notification_retry_seconds": 0.05,
        "webhook_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


class Harness:
    def __init__(self, engine: NewExecutionEngine, observed: Observability) -> None:
        self.engine = engine
        self.observed = observed

    async def run(self, job: JobDefinition) -> Any:
        return await self.engine.execute_job_now(job)

    async def deliveries(self, **filters: Any) -> list[Any]:
        assert self.observed.outbox is not None
        return await self.observed.outbox.list_deliveries(
            execution_id=filters.get("execution_id"), job_id=filters.get("job_id")
        )

    async def settled(self, count: int, **filters: Any) -> list[Any]:
        """Wait until ``count`` deliveries exist and none is pending; return them."""
        found: list[Any] = []

        async def done() -> bool:
            nonlocal found
            found = await self.deliveries(**filters)
            return len(found) >= count and all(d.status != "pending" for d in found)

        await wait_until(done, 15, f"{count} settled deliveries ({filters})")
        return found


@pytest.fixture
async def harness_factory(store: Any) -> AsyncIterator[Any]:
    started: list[tuple[NewExecutionEngine, Observability]] = []

    async def make(**overrides: Any) -> Harness:
        engine = NewExecutionEngine(store=store, poll_interval_seconds=0.02)
        observed = build_observability(engine, settings(**overrides))
        await engine.start()
        observed.start()
        started.append((engine, observed))
        return Harness(engine, observed)

    yield make
    for engine, observed in reversed(started):
        await observed.stop()
        await engine.stop(wait_for_jobs=False)


def job(job_id: str, script: str, rules: list[dict[str, Any]], **fields: Any) -> JobDefinition:
    return JobDefinition(
        job_id=job_id,
        job_name=f"Job {job_id}",
        steps=[{"step_id": "main", "type": "shell", "script": script}],
        notifications=rules,
        **fields,
    )


def hook(receiver: WebhookReceiver, *events: str, **extra: Any) -> dict[str, Any]:
    return {"on": list(events), "webhook": {"url": receiver.url, "secret_name": "ops"}, **extra}


async def test_a_failure_is_posted_signed_with_the_failed_step(harness_factory: Any) -> None:
    harness = await harness_factory(public_url="https://scheduler.example")
    async with webhook_receiver(secret=SECRET) as receiver:
        result = await harness.run(
            job("nightly", "echo boom >&2; exit 3", [hook(receiver, "failure", "success")])
        )
        assert result.status is JobStatus.FAILED
        [delivery] = await harness.settled(1, execution_id=result.execution_id)
        assert delivery.status == "delivered"
        assert delivery.attempts == 1
        assert delivery.last_http_status == 200
        [request] = receiver.requests
        assert request.signature_ok is True
        assert request.headers["x-jobscheduler-event"] == "failure"
        body = request.json
        assert body["event"] == "failure"
        assert body["event_id"] == request.headers["x-jobscheduler-event-id"]
        assert body["job"] == {"job_id": "nightly", "job_name": "Job nightly", "timezone": "UTC"}
        execution = body["execution"]
        assert execution["execution_id"] == result.execution_id
        assert execution["status"] == "failed"
        assert execution["failed_step"]["step_id"] == "main"
        assert execution["failed_step"]["error_message"] == "exit code 3: boom"
        assert execution["error_message"] == "step 'main' failed: exit code 3: boom"
        assert body["console_url"] == (
            f"https://scheduler.example/ui/executions/{result.execution_id}"
        )


async def test_500_twice_then_200_is_retried_with_the_same_event_id(
    harness_factory: Any,
) -> None:
    harness = await harness_factory()
    async with webhook_receiver(secret=SECRET, fail_first=2) as receiver:
        result = await harness.run(job("flaky", "exit 1", [hook(receiver, "failure")]))
        [delivery] = await harness.settled(1, job_id="flaky")
        assert (delivery.status, delivery.attempts, delivery.last_http_status) == (
            "delivered",
            3,
            200,
        )
        assert [r.answered for r in receiver.requests] == [500, 500, 200]
        assert len({r.json["event_id"] for r in receiver.requests}) == 1
        assert receiver.requests[0].json["execution"]["execution_id"] == result.execution_id


async def test_a_receiver_that_hangs_times_out_and_the_log_says_so(harness_factory: Any) -> None:
    harness = await harness_factory(webhook_timeout_seconds=1.0, notification_max_attempts=2)
    async with webhook_receiver(secret=SECRET, hang=True) as receiver:
        await harness.run(job("slowpoke", "exit 1", [hook(receiver, "failure")]))
        [delivery] = await harness.settled(1, job_id="slowpoke")
        assert delivery.status == "failed"
        assert delivery.attempts == 2
        assert delivery.last_error == "timed out after 1s"
        # Each attempt reached the receiver, which never answered (a connection that took
        # longer than the timeout on a loaded machine would be one request short).
        assert 1 <= len(receiver.requests) <= 2
        assert all(r.answered is None for r in receiver.requests)


async def test_three_failures_then_success_send_one_failure_and_one_recovered(
    harness_factory: Any,
) -> None:
    harness = await harness_factory()
    async with webhook_receiver(secret=SECRET) as receiver:
        rule = hook(receiver, "failure", "recovered", min_consecutive_failures=3)
        for _ in range(3):
            await harness.run(job("etl", "exit 1", [rule]))
        await harness.settled(1, job_id="etl")
        await harness.run(job("etl", "true", [rule]))
        await harness.settled(2, job_id="etl")
        assert [r.json["event"] for r in receiver.delivered()] == ["failure", "recovered"]
        assert receiver.delivered()[0].json["consecutive_failures"] == 3
        # Two more failures: below the minimum again, nothing is sent.
        for _ in range(2):
            await harness.run(job("etl", "exit 1", [rule]))
        await harness.run(job("etl", "true", [rule]))
        deliveries = await harness.settled(2, job_id="etl")
        assert len(deliveries) == 2
        assert len(receiver.requests) == 2


async def test_success_timeout_cancelled_and_slow_events(harness_factory: Any) -> None:
    harness = await harness_factory()
    async with webhook_receiver(secret=SECRET) as receiver:
        every = ["success", "failure", "timeout", "cancelled"]
        ok = await harness.run(job("ok", "true", [hook(receiver, *every)]))
        late = await harness.run(
            job("late", "sleep 5", [hook(receiver, *every)], timeout_seconds=1)
        )
        assert late.status is JobStatus.TIMEOUT
        slow = await harness.run(
            job("slow", "sleep 0.3", [hook(receiver, "slow", slow_after_seconds=0.1)])
        )
        cancel_me = job("cancel-me", "sleep 30", [hook(receiver, *every)])
        running = await harness.engine.submit_now(cancel_me)
        await wait_until(
            lambda: bool(harness.engine.running_executions()), what="cancel-me running"
        )
        await harness.engine.cancel_job(running.execution_id)
        await harness.settled(4)
        events = {
            r.json["execution"]["execution_id"]: r.json["event"] for r in receiver.delivered()
        }
        assert events == {
            ok.execution_id: "success",
            late.execution_id: "timeout",
            slow.execution_id: "slow",
            running.execution_id: "cancelled",
        }


async def test_slow_fires_while_the_run_is_still_running(harness_factory: Any) -> None:
    harness = await harness_factory()
    async with webhook_receiver(secret=SECRET) as receiver:
        rule = hook(receiver, "slow", slow_after_seconds=0.2)
        execution = await harness.engine.submit_now(job("crawl", "sleep 30", [rule]))
        await wait_until(lambda: bool(receiver.delivered()), what="slow while running")
        body = receiver.delivered()[0].json
        assert body["event"] == "slow"
        assert body["execution"]["status"] == "running"
        assert body["running_seconds"] > 0.2
        await harness.engine.cancel_job(execution.execution_id)
        await harness.settled(1, job_id="crawl")
        assert len(receiver.requests) == 1  # once, not again when it ends


async def test_a_missed_fire_is_notified_with_its_reason(harness_factory: Any, store: Any) -> None:
    harness = await harness_factory()
    async with webhook_receiver(secret=SECRET) as receiver:
        await harness.observed.stop()
        await harness.engine.stop()
        # Scheduled, then the service is down past its time and the misfire grace.
        engine = NewExecutionEngine(store=store, misfire_grace_seconds=0.1)
        await engine.start()
        once = job("once", "true", [hook(receiver, "missed")])
        execution_id = await engine.schedule_job(once, datetime.now(UTC) + timedelta(seconds=2))
        await engine.stop()
        harness.engine = NewExecutionEngine(
            store=store,
            misfire_grace_seconds=0.1,
            poll_interval_seconds=0.02,
            clock=lambda: datetime.now(UTC) + timedelta(minutes=5),
        )
        harness.observed = build_observability(harness.engine, settings())
        await harness.engine.start()  # recovery records it missed, with its outbox row
        harness.observed.start()
        try:
            [delivery] = await harness.settled(1, execution_id=execution_id)
            assert delivery.status == "delivered"
            body = receiver.delivered()[0].json
            assert body["event"] == "missed"
            assert body["reason"].startswith("missed: due at")
        finally:
            await harness.observed.stop()
            await harness.engine.stop()


async def test_email_through_aiosmtpd(harness_factory: Any) -> None:
    with smtp_receiver() as smtp:
        harness = await harness_factory(smtp_url=smtp.url, smtp_from="scheduler@example.com")
        result = await harness.run(
            job(
                "mailer",
                "echo broken >&2; exit 2",
                [{"on": ["failure"], "email": {"to": ["dba@example.com", "ops@example.com"]}}],
            )
        )
        [delivery] = await harness.settled(1, job_id="mailer")
        assert delivery.status == "delivered", delivery.last_error
        await wait_until(lambda: len(smtp.messages) == 1, what="the mail arrived")
        [message] = smtp.messages
        assert message["Subject"] == "[jobscheduler] Job mailer (mailer): failure - failed"
        assert message["From"] == "scheduler@example.com"
        assert message["To"] == "dba@example.com, ops@example.com"
        text = message.get_payload(decode=True).decode()
        assert result.execution_id in text
        assert "Failed step: main (shell) failed" in text


async def test_a_host_outside_the_allowed_list_is_refused_at_delivery(
    harness_factory: Any,
) -> None:
    # Allowed by address range only; "localhost" resolves (at delivery) to loopback, which
    # is outside 10.0.0.0/8: never called.
    harness = await harness_factory(webhook_allowed_hosts=["10.0.0.0/8"])
    async with webhook_receiver(secret=SECRET) as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")
        rule = {"on": ["failure"], "webhook": {"url": url, "secret_name": "ops"}}
        await harness.run(job("ssrf", "exit 1", [rule]))
        [delivery] = await harness.settled(1, job_id="ssrf")
        assert delivery.status == "failed"
        assert "outside V2_WEBHOOK_ALLOWED_HOSTS" in (delivery.last_error or "")
        await asyncio.sleep(0)  # nothing in flight: the receiver was never called
        assert receiver.requests == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_two_nodes_deliver_each_message_once(make_store: Any, backend: str) -> None:
    from app.domain.notifications import OutboxMessage
    from app.engine.notifications import AllowedHosts, Notifier
    from app.engine.notify_delivery import NotificationDispatcher, WebhookChannel

    stores = [await make_store(backend), await make_store(backend)]
    async with webhook_receiver(secret=SECRET) as receiver:
        destination = {"url": receiver.url, "secret_name": "ops"}
        messages = [
            OutboxMessage(
                delivery_id=f"d{i}",
                event_id=f"e{i}",
                event="failure",
                channel="webhook",
                destination=destination,
                job_id="shared",
                execution_id=f"x{i}",
                payload={"event": "failure", "event_id": f"e{i}"},
            )
            for i in range(30)
        ]
        await stores[0].add_outbox_messages(messages)
        await stores[1].add_outbox_messages(messages[:10])  # a repeat is ignored
        channel = WebhookChannel(AllowedHosts.parse(["127.0.0.1"]), {"ops": SECRET})
        nodes = [
            NotificationDispatcher(
                store,
                Notifier(store, lambda _: None),
                {"webhook": channel},
                owner=f"node-{n}",
                poll_interval_seconds=0.01,
                batch_size=3,
            )
            for n, store in enumerate(stores)
        ]
        for node in nodes:
            node.start()
        try:

            async def all_delivered() -> bool:
                found = await stores[0].list_deliveries(job_id="shared")
                return len(found) == 30 and all(d.status == "delivered" for d in found)

            await wait_until(all_delivered, 20, "30 deliveries")
        finally:
            for node in nodes:
                await node.stop()
            await channel.close()
        ids = sorted(r.json["event_id"] for r in receiver.requests)
        assert ids == sorted(f"e{i}" for i in range(30))  # each once, none twice


async def test_a_run_interrupted_by_a_crash_is_a_failure_notice(
    harness_factory: Any, store: Any
) -> None:
    from app.domain import JobExecutionResult

    async with webhook_receiver(secret=SECRET) as receiver:
        # What a process killed mid-run leaves behind: the execution recorded RUNNING.
        definition = job("crashed", "sleep 30", [hook(receiver, "failure")])
        await store.record_pending("left-behind", definition, trigger="now")
        await store.record_job(
            JobExecutionResult(
                execution_id="left-behind",
                job_id="crashed",
                job_name="Job crashed",
                status=JobStatus.RUNNING,
                timezone="UTC",
                start_time=datetime.now(UTC),
                metadata={"trigger": "now"},
            )
        )
        harness = await harness_factory()  # its start-up recovery settles it
        [delivery] = await harness.settled(1, execution_id="left-behind")
        assert delivery.status == "delivered"
        body = receiver.delivered()[0].json
        assert body["event"] == "failure"
        assert body["execution"]["status"] == "failed"
        assert body["execution"]["error_message"].startswith("interrupted")


async def test_a_failure_to_make_notices_never_loses_the_execution_record(store: Any) -> None:
    from app.domain import JobExecutionResult

    class Broken:
        async def finished(self, result: Any) -> list[Any]:
            raise RuntimeError("the history could not be read")

    store.outbox_source = Broken()
    definition = job("kept", "true", [])
    await store.record_pending("kept-1", definition, trigger="now")
    ended = JobExecutionResult(
        execution_id="kept-1",
        job_id="kept",
        job_name="Job kept",
        status=JobStatus.SUCCESS,
        timezone="UTC",
        metadata={"trigger": "now"},
    )
    await store.record_job(ended)
    recorded = await store.get_execution("kept-1")
    assert recorded is not None and recorded.status is JobStatus.SUCCESS
    assert await store.list_deliveries(execution_id="kept-1") == []
