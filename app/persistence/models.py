"""SQLAlchemy 2.0 ORM models: the spec's V2 tables plus what durable scheduling needs.

``job_executions_v2`` and ``step_executions_v2`` keep the spec's columns, types, indexes and
foreign key; timestamps are timezone-aware UTC (``UTCDateTime``). Added columns are listed on
each model. ``scheduled_runs_v2`` holds runs waiting for their time, claimable by several
replicas (status, attempt, lease owner and expiry). ``jobs_v2`` holds the stored (recurring)
job definitions.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.persistence.types import UTCDateTime

#: Stable constraint and index names on every backend (and in migrations).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Values of ``ScheduledRunV2.status``.
RUN_PENDING = "pending"  # waiting for its time, claimable
RUN_CLAIMED = "claimed"  # taken by ``lease_owner`` until ``lease_expires_at``
RUN_DONE = "done"  # its execution finished (or was settled at recovery)
RUN_CANCELLED = "cancelled"  # cancelled before it started
RUN_STATUSES = (RUN_PENDING, RUN_CLAIMED, RUN_DONE, RUN_CANCELLED)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class JobExecutionV2(Base):
    """Job execution record for V2 system.

    Beyond the spec: ``trigger`` (how it came to be), ``scheduled_for``, ``requested_by``,
    ``job_definition_json`` (``JobDefinition.to_dict()``, to run or retry it later),
    ``attempt`` (claim attempt of its scheduled run: with ``owner``, the fence of every write
    after a claim), ``owner`` (the node running it), ``updated_at``, ``attempts_json``
    (summaries of the execution's attempts), and ``cancel_requested_at``/``cancel_requested_by``
    (a cancel asked through any replica, which the owning node carries out).
    """

    __tablename__ = "job_executions_v2"

    execution_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(100), index=True)
    job_name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(50), index=True)
    timezone: Mapped[str] = mapped_column(String(50))
    start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    duration_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    metadata_json: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=_utc_now)
    # -- added for durability -------------------------------------------------------------
    trigger: Mapped[str] = mapped_column(String(20), default="now", server_default="now")
    scheduled_for: Mapped[datetime | None] = mapped_column(index=True)
    job_definition_json: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str | None] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    owner: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(default=_utc_now, onupdate=_utc_now)
    # -- added for attempt history (revision "flow") ----------------------------------------
    attempts_json: Mapped[str | None] = mapped_column(Text)
    # -- added for the cluster ------------------------------------------------------------
    cancel_requested_at: Mapped[datetime | None]
    cancel_requested_by: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        # Listing is newest first with a (created_at, execution_id) keyset cursor.
        Index("ix_job_executions_v2_created_at_execution_id", "created_at", "execution_id"),
        Index("ix_job_executions_v2_job_id_created_at", "job_id", "created_at"),
        # A node's work: WHERE owner = :node AND status IN (...) (heartbeat, recovery).
        Index("ix_job_executions_v2_owner_status", "owner", "status"),
        Index("ix_job_executions_v2_status_scheduled_for", "status", "scheduled_for"),
    )


class StepExecutionV2(Base):
    """Step execution record for V2 system.

    Beyond the spec: ``attempt`` (the job attempt the step ran in), ``run`` (which run of
    the step within the attempt: a step retry or a goto loop runs it again; one row per
    (execution_id, attempt, step_id, run)), ``start_order`` (order of first record within
    the attempt) and ``updated_at``.
    """

    __tablename__ = "step_executions_v2"

    step_execution_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    execution_id: Mapped[str] = mapped_column(
        String(100), ForeignKey("job_executions_v2.execution_id", ondelete="CASCADE")
    )
    step_id: Mapped[str] = mapped_column(String(100))
    step_name: Mapped[str] = mapped_column(String(255))
    step_type: Mapped[str] = mapped_column(String(50), index=True)
    status: Mapped[str] = mapped_column(String(50), index=True)
    start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    duration_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    output_text: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    metadata_json: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=_utc_now)
    # -- added for retries ----------------------------------------------------------------
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    start_order: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=_utc_now, onupdate=_utc_now)
    # -- added for step retries and loops (revision "flow") ---------------------------------
    run: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (UniqueConstraint("execution_id", "attempt", "step_id", "run"),)


class ScheduledRunV2(Base):
    """A run waiting for its time; the history row (same ``execution_id``) is PENDING.

    ``schedule_key`` equals ``scheduled_for`` only for runs fired by a recurring schedule
    (trigger ``schedule``) and is NULL otherwise, so the plain unique key on
    (job_id, schedule_key) makes a recurring fire happen once on every backend while one-off
    runs of the same job at the same time stay allowed (NULLs never collide).
    """

    __tablename__ = "scheduled_runs_v2"

    execution_id: Mapped[str] = mapped_column(
        String(100),
        ForeignKey("job_executions_v2.execution_id", ondelete="CASCADE"),
        primary_key=True,
    )
    job_id: Mapped[str] = mapped_column(String(100))
    job_definition_json: Mapped[str] = mapped_column(Text)
    scheduled_for: Mapped[datetime] = mapped_column(index=True)
    schedule_key: Mapped[datetime | None]
    timezone: Mapped[str] = mapped_column(String(50))
    trigger: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default=RUN_PENDING)
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=_utc_now)
    metadata_json: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("job_id", "schedule_key"),
        CheckConstraint("status IN ('pending', 'claimed', 'done', 'cancelled')", name="status"),
        # Due runs: WHERE status = 'pending' AND scheduled_for <= :until ORDER BY scheduled_for
        Index("ix_scheduled_runs_v2_status_scheduled_for", "status", "scheduled_for"),
    )


#: Job ids sort by code point on every backend (as in SQLite and in Python), whatever the
#: PostgreSQL database's default collation: list order and keyset cursors do not depend on it.
JOB_ID_TYPE = String(100).with_variant(String(100, collation="C"), "postgresql")


class JobDefinitionV2(Base):
    """A stored job definition (recurring jobs).

    ``definition_json`` is ``JobDefinition.to_dict()``; ``job_name``, ``timezone`` and
    ``enabled`` are copies of its fields for filtering, and ``created_at``/``updated_at``
    the authoritative timestamps. ``version`` (optimistic lock) starts at 1 and goes up by
    one on every change of the definition. ``next_fire_at`` is the next instant the schedule
    fires (NULL: none), ``last_fire_at`` the last one that was fired. Executions are not
    linked by a foreign key: deleting a job keeps its history.
    """

    __tablename__ = "jobs_v2"

    job_id: Mapped[str] = mapped_column(JOB_ID_TYPE, primary_key=True)
    job_name: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(50), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    definition_json: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    next_fire_at: Mapped[datetime | None]
    last_fire_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("version >= 1", name="version"),
        # Due jobs: WHERE enabled AND next_fire_at <= :until ORDER BY next_fire_at; its
        # leading column also serves the ``enabled`` filter of the listing.
        Index("ix_jobs_v2_enabled_next_fire_at", "enabled", "next_fire_at"),
    )


#: Values of ``SchedulerNodeV2.state``.
NODE_RUNNING = "running"


class SchedulerNodeV2(Base):
    """One running engine (node) of the cluster. ``heartbeat_at`` is set from the database's
    clock; a node whose heartbeat is older than the node timeout is dead, and another node
    settles its work (its heartbeat is the lease of everything it owns)."""

    __tablename__ = "scheduler_nodes"

    node_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(50))
    state: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


class SerialLockV2(Base):
    """The one execution of a job that may run now when its runs must not overlap (overlap
    ``queue``, ``run_all`` catch-ups), whichever node runs it. A row whose owner is no live
    node, or whose execution ended, is stale: the next node to ask replaces it."""

    __tablename__ = "job_serial_locks_v2"

    job_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    execution_id: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(100))
    acquired_at: Mapped[datetime]
