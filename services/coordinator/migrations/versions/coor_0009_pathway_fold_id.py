"""coordinator: the id of the fold a pathway was last written from (issue 15)

A worker keeps its fold of each pathway it wrote, under this id, and applies the next
event to it only while the stored pathway still has that id; otherwise it re-folds.
"""

from alembic import op

from shared.migrations import uuid

revision = "coor_0009"
down_revision = "coor_0008"


def upgrade() -> None:
    with op.batch_alter_table("pathway") as batch:
        batch.add_column(uuid("fold_id", nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pathway") as batch:
        batch.drop_column("fold_id")
