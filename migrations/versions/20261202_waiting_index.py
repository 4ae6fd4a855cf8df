"""waiting: an index for the cluster's queue depths

``GET /api/v2/execution/status`` counts, over the cluster, the runs that are due and not
started. With an index on (status, scheduled_for) that is two short index ranges (queued at
once, and due), instead of a scan of every PENDING row (a million runs waiting for a later
time took 1.3 s a request).

Revision ID: waiting
Revises: serial
Create Date: 2026-12-02 05:20:00

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "waiting"
down_revision: str | Sequence[str] | None = "serial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_executions_v2") as batch:
        batch.create_index("ix_job_executions_v2_status_scheduled_for", ["status", "scheduled_for"])


def downgrade() -> None:
    with op.batch_alter_table("job_executions_v2") as batch:
        batch.drop_index("ix_job_executions_v2_status_scheduled_for")
