"""serial: one run of a job at a time across the cluster

``job_serial_locks_v2`` holds, per job, the execution that may run now when the job's runs
must not overlap (overlap ``queue`` and ``run_all`` catch-ups) and the node that runs it. A
row whose node is dead, or whose execution ended, is stale and is replaced by the next node
that asks.

Revision ID: serial
Revises: 0003
Create Date: 2026-12-02 04:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "serial"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_serial_locks_v2",
        sa.Column("job_id", sa.String(length=100), nullable=False),
        sa.Column("execution_id", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_serial_locks_v2")),
    )


def downgrade() -> None:
    op.drop_table("job_serial_locks_v2")
