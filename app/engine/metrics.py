"""Prometheus metrics of one engine (``GET /metrics``), through ``prometheus-client``.

Counters and histograms move when the engine reports an ended execution or a fire that did
not run (``app.engine.observers``); gauges (queues, workers, the node's state) are read from
the engine when scraped. Each app has a registry of its own, so several engines in one
process (tests) never share series.

Cardinality is bounded: no execution ids in labels; timezones are IANA names; job ids appear
only in ``jobscheduler_job_executions_finished_total``, only for stored (scheduled) jobs and
for at most ``job_label_limit`` of them (the rest are counted under ``job_id="_other"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.domain.records import TRIGGER_SCHEDULE
from app.engine.observers import FinishedRun, UnrunFire

#: Prometheus text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
OTHER_JOBS = "_other"

_Labelled = TypeVar("_Labelled", Counter, Histogram)


class QueueView(Protocol):
    timezone: str

    def get_queue_depth(self) -> int: ...

    def get_active_count(self) -> int: ...

    def oldest_waiting_seconds(self) -> float: ...


class EngineView(Protocol):
    """What the gauges read from the engine at scrape time."""

    max_workers: int

    @property
    def is_running(self) -> bool: ...

    @property
    def busy_workers(self) -> int: ...

    def timezone_queues(self) -> Sequence[QueueView]: ...


class EngineMetrics:
    """The engine's series; an ``EngineObserver`` (add it to ``engine.observers``)."""

    def __init__(
        self,
        engine: EngineView,
        *,
        job_label_limit: int = 100,
        heartbeat: Callable[[], float | None] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._job_label_limit = job_label_limit
        self._labelled_jobs: set[str] = set()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.finished = Counter(
            "jobscheduler_executions_finished",
            "Executions that reached a terminal state, by status, timezone and trigger.",
            ("status", "timezone", "trigger"),
            registry=self.registry,
        )
        self.job_finished = Counter(
            "jobscheduler_job_executions_finished",
            "Executions of stored (scheduled) jobs that ended, by job and status "
            f"(at most {job_label_limit} job ids; the rest under job_id={OTHER_JOBS!r}).",
            ("job_id", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "jobscheduler_execution_duration_seconds",
            "Run time of ended executions (start to end, all attempts), by status.",
            ("status",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.step_duration = Histogram(
            "jobscheduler_step_duration_seconds",
            "Run time of ended steps (latest attempt of each execution), by type and status.",
            ("step_type", "status"),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.lateness = Histogram(
            "jobscheduler_schedule_lateness_seconds",
            "Actual start minus scheduled time of scheduled and recurring runs, by trigger.",
            ("trigger",),
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.misfires = Counter(
            "jobscheduler_misfires",
            "Fires of a schedule recorded without running, by misfire/overlap policy outcome "
            "(missed, coalesced, skipped, capped, overlap).",
            ("outcome",),
            registry=self.registry,
        )
        self.notifications = Counter(
            "jobscheduler_notifications",
            "Notification delivery attempts, by channel (webhook, email) and result "
            "(delivered, retry, failed).",
            ("channel", "result"),
            registry=self.registry,
        )
        self.registry.register(_EngineState(engine, heartbeat))

    # -- EngineObserver --------------------------------------------------------------------
    def execution_finished(self, run: FinishedRun) -> None:
        result = run.result
        status = result.status.value
        child = self._child
        child(self.finished, status, result.timezone, run.trigger).inc()
        if run.trigger == TRIGGER_SCHEDULE:
            child(self.job_finished, self._job_label(result.job_id), status).inc()
        if result.start_time is not None and result.end_time is not None:
            child(self.duration, status).observe(result.duration_seconds)
        for step in result.steps:
            if step.start_time is not None and step.end_time is not None:
                child(self.step_duration, step.step_type, step.status.value).observe(
                    step.duration_seconds
                )
        if run.scheduled_for is not None and result.start_time is not None:
            late = (result.start_time - run.scheduled_for).total_seconds()
            child(self.lateness, run.trigger).observe(max(late, 0.0))

    def _child(self, metric: _Labelled, *labels: str) -> _Labelled:
        """``metric.labels(*labels)``, looked up once per label set (every execution that
        ends moves four or five series, and ``labels()`` costs more than the move)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def fire_not_run(self, fire: UnrunFire) -> None:
        self.misfires.labels(fire.outcome).inc()

    # -- notifications ---------------------------------------------------------------------
    def notification_attempt(self, channel: str, result: str) -> None:
        self.notifications.labels(channel, result).inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def _job_label(self, job_id: str) -> str:
        if job_id in self._labelled_jobs:
            return job_id
        if len(self._labelled_jobs) < self._job_label_limit:
            self._labelled_jobs.add(job_id)
            return job_id
        return OTHER_JOBS


class _EngineState(Collector):
    """Gauges read from the engine on every scrape."""

    def __init__(self, engine: EngineView, heartbeat: Callable[[], float | None] | None) -> None:
        self._engine = engine
        self._heartbeat = heartbeat

    def collect(self) -> Iterable[Metric]:
        engine = self._engine
        depth = GaugeMetricFamily(
            "jobscheduler_queue_depth",
            "Executions waiting in a timezone queue for a slot.",
            labels=["timezone"],
        )
        active = GaugeMetricFamily(
            "jobscheduler_queue_active",
            "Executions of a timezone queue running now.",
            labels=["timezone"],
        )
        oldest = GaugeMetricFamily(
            "jobscheduler_queue_oldest_waiting_seconds",
            "Age of the execution that has waited longest in a timezone queue (0: none).",
            labels=["timezone"],
        )
        for queue in engine.timezone_queues():
            depth.add_metric([queue.timezone], queue.get_queue_depth())
            active.add_metric([queue.timezone], queue.get_active_count())
            oldest.add_metric([queue.timezone], queue.oldest_waiting_seconds())
        yield depth
        yield active
        yield oldest
        yield GaugeMetricFamily(
            "jobscheduler_workers_busy",
            "Worker slots in use (executions running on this node).",
            value=engine.busy_workers,
        )
        yield GaugeMetricFamily(
            "jobscheduler_workers_total", "Worker slots (V2_MAX_WORKERS).", value=engine.max_workers
        )
        yield GaugeMetricFamily(
            "jobscheduler_engine_up",
            "1 while this node's engine runs and accepts work, else 0.",
            value=1.0 if engine.is_running else 0.0,
        )
        if self._heartbeat is not None:
            yield GaugeMetricFamily(
                "jobscheduler_engine_heartbeat_timestamp_seconds",
                "Unix time of this node's last successful pass over the database (its "
                "notification outbox poll); 0 before the first.",
                value=self._heartbeat() or 0.0,
            )
