"""commit-ordered feed and feed positions

Revision ID: refe_0003
Revises: refe_0002
Create Date: 2026-12-02 18:30:00.000000
"""

from collections.abc import Sequence

from shared.migrations import add_feed_tracking, drop_feed_tracking

revision: str = "refe_0003"
down_revision: str | None = "refe_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_feed_tracking()


def downgrade() -> None:
    drop_feed_tracking()
