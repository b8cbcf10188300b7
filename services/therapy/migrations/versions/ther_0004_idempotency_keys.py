"""therapy: idempotency keys, the stored answers to requests sent with an Idempotency-Key

Revision ID: ther_0004
Revises: ther_0003
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

from shared.migrations import create_idempotency_table, drop_idempotency_table

revision: str = "ther_0004"
down_revision: str | None = "ther_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_idempotency_table()


def downgrade() -> None:
    drop_idempotency_table()
