"""notification outbox: notification_outbox_v2

One row per (event, destination) to deliver, written in the transaction of the state change
that causes it (``app.persistence.outbox``), with its delivery state: attempts, the next one,
the lease of the node delivering it, the last error and HTTP status.

Revision ID: observe
Revises: calendars
Create Date: 2026-12-02 01:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "observe"
down_revision: str | Sequence[str] | None = "calendars"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_outbox_v2",
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("destination_json", sa.Text(), nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=False),
        sa.Column("execution_id", sa.String(length=100), nullable=True),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_notification_outbox_v2")),
    )
    op.create_index(
        "ix_notification_outbox_v2_status_next_attempt_at",
        "notification_outbox_v2",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_notification_outbox_v2_job_id"), "notification_outbox_v2", ["job_id"]
    )
    op.create_index(
        op.f("ix_notification_outbox_v2_execution_id"),
        "notification_outbox_v2",
        ["execution_id"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_notification_outbox_v2_execution_id"), "notification_outbox_v2")
    op.drop_index(op.f("ix_notification_outbox_v2_job_id"), "notification_outbox_v2")
    op.drop_index(
        "ix_notification_outbox_v2_status_next_attempt_at", table_name="notification_outbox_v2"
    )
    op.drop_table("notification_outbox_v2")
