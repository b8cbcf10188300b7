"""infusions: issue 12's safety records

A course held until an MDT review resumes it; a start over a high pre-infusion reading
overridden by a named clinician; the reason a dose given differs from the plan.
"""

from alembic import op

from shared.migrations import boolean, json, string

revision = "infu_0005"
down_revision = "infu_0004"


def upgrade() -> None:
    with op.batch_alter_table("infusion_course") as batch:
        batch.add_column(boolean("held_for_mdt", server_default="0"))
    with op.batch_alter_table("infusion_session") as batch:
        batch.add_column(json("start_override", nullable=True))
        batch.add_column(string("given_reason", 1000, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("infusion_session") as batch:
        batch.drop_column("given_reason")
        batch.drop_column("start_override")
    with op.batch_alter_table("infusion_course") as batch:
        batch.drop_column("held_for_mdt")
