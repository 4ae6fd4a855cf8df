"""cluster: scheduler_nodes, cancel requests on job_executions_v2

``scheduler_nodes`` holds one row per running engine (node): who it is and its heartbeat on
the database's clock. Its heartbeat is the lease of everything it runs: work whose owner has
no fresh heartbeat is settled by another node. ``cancel_requested_at``/``cancel_requested_by``
let any replica ask the owning node to cancel an execution. ``scheduled_runs_v2.metadata_json``
carries what a run's execution starts with (a recovery retry names the execution it repeats).

Revision ID: 0003
Revises: observe
Create Date: 2026-12-02 01:15:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "observe"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduler_nodes",
        sa.Column("node_id", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_scheduler_nodes")),
    )
    with op.batch_alter_table("job_executions_v2") as batch:
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("cancel_requested_by", sa.String(length=100)))
        batch.create_index("ix_job_executions_v2_owner_status", ["owner", "status"])
    with op.batch_alter_table("scheduled_runs_v2") as batch:
        batch.add_column(sa.Column("metadata_json", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("scheduled_runs_v2") as batch:
        batch.drop_column("metadata_json")
    with op.batch_alter_table("job_executions_v2") as batch:
        batch.drop_index("ix_job_executions_v2_owner_status")
        batch.drop_column("cancel_requested_by")
        batch.drop_column("cancel_requested_at")
    op.drop_table("scheduler_nodes")
