"""commit-ordered feed; feed positions replace the coordinator's feed cursors

Revision ID: coor_0006
Revises: coor_0005
Create Date: 2026-12-02 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.migrations import add_feed_tracking, drop_feed_tracking

revision: str = "coor_0006"
down_revision: str | None = "coor_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_feed_tracking()
    # The coordinator's own cursors (positions only) become positions in the new
    # cursor form: every row before this migration has txid 0.
    op.execute(
        "INSERT INTO feed_position (producer, cursor, created_at, caught_up_at, behind,"
        " recovered, failures)"
        " SELECT producer, '0.' || position, read_at, read_at, 0, 0, 0 FROM feed_cursor"
    )
    op.drop_table("feed_cursor")


def downgrade() -> None:
    op.create_table(
        "feed_cursor",
        sa.Column("producer", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("producer"),
    )
    drop_feed_tracking()
