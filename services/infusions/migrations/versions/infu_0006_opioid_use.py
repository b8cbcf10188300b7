"""infusions: opioid use per medicine (issue 12)

Recorded at an assessment and at each follow-up, with its MME per day under the
policy's table at the time.
"""

import sqlalchemy as sa
from alembic import op

from shared.migrations import boolean, index_columns, json, number, string, timestamp, uuid

revision = "infu_0006"
down_revision = "infu_0005"


def upgrade() -> None:
    op.create_table(
        "opioid_use",
        uuid("id"),
        uuid("course_id"),
        string("context", 12),
        string("recorded_by", 100),
        timestamp("recorded_at"),
        string("conversion_table", 20),
        json("medicines"),
        number("total_mme_per_day"),
        boolean("complete"),
        json("flags"),
        boolean("benzodiazepine"),
        sa.ForeignKeyConstraint(["course_id"], ["infusion_course.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("opioid_use", "course_id")


def downgrade() -> None:
    op.drop_index("ix_opioid_use_course_id", table_name="opioid_use")
    op.drop_table("opioid_use")
