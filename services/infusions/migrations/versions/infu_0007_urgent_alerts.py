"""infusions: the coordinator's open urgent alerts, kept to refuse a discharge or a close

Revision ID: infu_0007
Revises: infu_0006
Create Date: 2026-12-03 17:20:00.000000
"""

from collections.abc import Sequence

from shared.migrations import create_urgent_alert_table, drop_urgent_alert_table

revision: str = "infu_0007"
down_revision: str | None = "infu_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_urgent_alert_table()


def downgrade() -> None:
    drop_urgent_alert_table()
