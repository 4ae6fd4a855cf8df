"""business calendars: calendars_v2

Named business calendars that schedules exclude (``"exclude": {"calendar": ...}``): the
definition as JSON (listed dates, or a country and subdivision for the ``holidays``
package). A new table: existing rows are untouched.

Revision ID: calendars
Revises: flow
Create Date: 2026-12-02 01:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = "calendars"
down_revision: str | Sequence[str] | None = "flow"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calendars_v2",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("definition_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_calendars_v2")),
    )


def downgrade() -> None:
    op.drop_table("calendars_v2")
