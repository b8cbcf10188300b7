"""coordinator baseline: coor_0001 to coor_0006 squashed into one (see shared.migrations)"""

import sqlalchemy as sa
from alembic import op

from shared.migrations import (
    create_platform_tables,
    drop_platform_tables,
    index_columns,
    integer,
    json,
    string,
    timestamp,
    uuid,
)

revision = "coor_0006"
down_revision: str | None = None


def upgrade() -> None:
    create_platform_tables()

    op.create_table(
        "stored_event",
        uuid("event_id"),
        uuid("patient_id"),
        string("type", 100),
        integer("schema_version"),
        string("producer", 40),
        string("subject_type", 50),
        string("subject_id", 64),
        integer("sequence"),
        timestamp("occurred_at"),
        timestamp("received_at"),
        json("envelope"),
        sa.PrimaryKeyConstraint("event_id"),
    )
    index_columns("stored_event", "patient_id")
    op.create_index(
        "ix_stored_event_subject", "stored_event", ["subject_type", "subject_id", "sequence"]
    )

    op.create_table(
        "pathway",
        uuid("patient_id"),
        string("stage", 20),
        timestamp("stage_since"),
        integer("open_alerts"),
        integer("event_count"),
        json("document"),
        timestamp("updated_at"),
        string("teams", 200, server_default=","),
        timestamp("review_due", nullable=True),
        integer("review_rank", nullable=True),
        sa.PrimaryKeyConstraint("patient_id"),
    )
    index_columns("pathway", "stage", "review_due")

    op.create_table(
        "pathway_alert",
        string("id", 36),
        uuid("patient_id"),
        string("kind", 40),
        string("severity", 10),
        integer("severity_rank"),
        string("status", 14),
        string("owner_role", 30),
        timestamp("raised_at"),
        timestamp("due"),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("pathway_alert", "kind", "patient_id", "severity_rank", "status")

    op.create_table(
        "alert_action",
        integer("id"),
        string("alert_id", 36),
        uuid("patient_id"),
        string("action", 12),
        string("by_user", 100),
        string("by_role", 40),
        string("note", 2000, nullable=True),
        timestamp("at"),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("alert_action", "alert_id", "patient_id")

    op.create_table(
        "mdt_review",
        uuid("id"),
        uuid("patient_id"),
        timestamp("reviewed_at"),
        string("decision", 30),
        json("attendees"),
        string("notes", 4000, nullable=True),
        string("reviewed_by", 100),
        uuid("referral_id", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("mdt_review", "patient_id")


def downgrade() -> None:
    for table in ("mdt_review", "alert_action", "pathway_alert", "pathway", "stored_event"):
        op.drop_table(table)
    drop_platform_tables()
