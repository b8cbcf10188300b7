"""therapy: the coordinator's open urgent alerts, kept to refuse a discharge or a close

Revision ID: ther_0005
Revises: ther_0004
Create Date: 2026-12-03 17:20:00.000000
"""

from collections.abc import Sequence

from shared.migrations import create_urgent_alert_table, drop_urgent_alert_table

revision: str = "ther_0005"
down_revision: str | None = "ther_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_urgent_alert_table()


def downgrade() -> None:
    drop_urgent_alert_table()
