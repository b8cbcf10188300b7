"""coordinator: the referral an MDT review decided on, kept with the review (issue 16)

The referrals service makes the referral by consuming the review's event and reads its
reason here, so the review and its decision are one write.
"""

from alembic import op

from shared.migrations import json

revision = "coor_0008"
down_revision = "coor_0007"


def upgrade() -> None:
    with op.batch_alter_table("mdt_review") as batch:
        batch.add_column(json("referral_request", nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mdt_review") as batch:
        batch.drop_column("referral_request")
