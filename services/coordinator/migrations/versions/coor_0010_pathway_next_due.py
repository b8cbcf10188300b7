"""coordinator: when each pathway's next time threshold falls due (issue 15)

The clock reads only the pathways whose next threshold has come, through this indexed
column, instead of every open pathway's document. Rows written before it are NULL, which
the clock treats as "look"; the next write of each pathway, or a rebuild, fills it in.
"""

from alembic import op

from shared.migrations import index_columns, timestamp

revision = "coor_0010"
down_revision = "coor_0009"


def upgrade() -> None:
    with op.batch_alter_table("pathway") as batch:
        batch.add_column(timestamp("next_due", nullable=True))
    index_columns("pathway", "next_due")


def downgrade() -> None:
    op.drop_index("ix_pathway_next_due", table_name="pathway")
    with op.batch_alter_table("pathway") as batch:
        batch.drop_column("next_due")
