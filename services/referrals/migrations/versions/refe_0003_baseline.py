"""referrals baseline: refe_0001 to refe_0003 squashed into one (see shared.migrations)"""

import sqlalchemy as sa
from alembic import op

from shared.migrations import (
    create_platform_tables,
    date,
    drop_platform_tables,
    index_columns,
    integer,
    json,
    string,
    timestamp,
    uuid,
)

revision = "refe_0003"
down_revision: str | None = None


def upgrade() -> None:
    create_platform_tables()

    op.create_table(
        "patient",
        uuid("id"),
        string("given_name", 100),
        string("family_name", 100),
        date("birth_date"),
        string("sex", 10),
        string("nhs_number", 10, nullable=True),
        string("contact_preference", 10, nullable=True),
        string("registered_by", 100),
        timestamp("registered_at"),
        timestamp("updated_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("nhs_number"),
    )

    op.create_table(
        "referral",
        uuid("id"),
        uuid("patient_id"),
        string("target", 30),
        string("priority", 10),
        string("status", 20),
        string("reason", 4000),
        json("conditions"),
        json("referrer"),
        json("prior_treatments"),
        json("baseline", nullable=True),
        string("created_by", 100),
        timestamp("received_at"),
        integer("priority_rank", server_default="1"),
        timestamp("status_changed_at", nullable=True),
        string("created_by_role", 40, server_default="referrer"),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("referral", "created_by", "patient_id", "status", "target")
    op.create_index(
        "ix_referral_inbox", "referral", ["target", "status", "priority_rank", "received_at", "id"]
    )
    op.create_index("ix_referral_queue", "referral", ["priority_rank", "received_at", "id"])
    op.create_index(
        "ix_referral_status_queue", "referral", ["status", "priority_rank", "received_at", "id"]
    )

    op.create_table(
        "referral_note",
        integer("id"),
        uuid("referral_id"),
        string("title", 200),
        string("text", 20000),
        string("by_user", 100),
        string("by_role", 40),
        timestamp("at"),
        sa.ForeignKeyConstraint(["referral_id"], ["referral.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("referral_note", "referral_id")

    op.create_table(
        "referral_transition",
        integer("id"),
        uuid("referral_id"),
        string("action", 20),
        string("from_status", 20, nullable=True),
        string("to_status", 20),
        string("by_user", 100),
        string("by_role", 40),
        timestamp("at"),
        string("note", 4000, nullable=True),
        sa.ForeignKeyConstraint(["referral_id"], ["referral.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("referral_transition", "referral_id")


def downgrade() -> None:
    for table in ("referral_transition", "referral_note", "referral", "patient"):
        op.drop_table(table)
    drop_platform_tables()
