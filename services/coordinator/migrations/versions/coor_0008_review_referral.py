"""coordinator: the referral an MDT review decided on, kept with the review (issue 16)

The referrals service makes the referral by consuming the review's event and reads its
reason here, so the review and its decision are one write.

Revision ID: coor_0008
Revises: coor_0007
Create Date: 2026-12-03 17:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations import json

revision: str = "coor_0008"
down_revision: str | None = "coor_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mdt_review") as batch:
        batch.add_column(json("referral_request", nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mdt_review") as batch:
        batch.drop_column("referral_request")
