"""attempt history: step_executions_v2.run, job_executions_v2.attempts_json

A step can run more than once in one attempt of its job (a step retry, a goto loop): its
rows are now keyed by (execution_id, attempt, step_id, run). Rows written before this
revision get run 0, which is what they were (one run of the step per attempt), so they
stay readable as they are. ``attempts_json`` holds the summaries of an execution's
attempts (status, times, error, path); NULL on older rows, whose attempts are rebuilt from
their step rows. Batch mode on SQLite, which cannot alter constraints in place.

Revision ID: flow
Revises: 0002
Create Date: 2026-12-02 01:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "flow"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KEY = "uq_step_executions_v2_execution_id_attempt_step_id"
_NEW_KEY = "uq_step_executions_v2_execution_id_attempt_step_id_run"


def upgrade() -> None:
    with op.batch_alter_table("job_executions_v2") as batch:
        batch.add_column(sa.Column("attempts_json", sa.Text(), nullable=True))
    with op.batch_alter_table("step_executions_v2") as batch:
        batch.add_column(sa.Column("run", sa.Integer(), server_default="0", nullable=False))
        batch.drop_constraint(_OLD_KEY, type_="unique")
        batch.create_unique_constraint(_NEW_KEY, ["execution_id", "attempt", "step_id", "run"])


def downgrade() -> None:
    # Later runs of a step within an attempt have no place in the old key: only run 0 stays.
    op.execute(sa.text("DELETE FROM step_executions_v2 WHERE run <> 0"))
    with op.batch_alter_table("step_executions_v2") as batch:
        batch.drop_constraint(_NEW_KEY, type_="unique")
        batch.create_unique_constraint(_OLD_KEY, ["execution_id", "attempt", "step_id"])
        batch.drop_column("run")
    with op.batch_alter_table("job_executions_v2") as batch:
        batch.drop_column("attempts_json")
