"""therapy baseline: ther_0001 to ther_0003 squashed into one (see shared.migrations)"""

import sqlalchemy as sa
from alembic import op

from shared.migrations import (
    boolean,
    create_platform_tables,
    date,
    drop_platform_tables,
    index_columns,
    integer,
    json,
    string,
    time,
    timestamp,
    uuid,
)

revision = "ther_0003"
down_revision: str | None = None


def upgrade() -> None:
    create_platform_tables()

    op.create_table(
        "clinician",
        string("id", 100),
        string("display_name", 200),
        boolean("active"),
        sa.PrimaryKeyConstraint("id"),
    )

    op.create_table(
        "therapy_episode",
        uuid("id"),
        uuid("patient_id"),
        uuid("referral_id"),
        string("status", 12),
        string("priority", 10),
        json("conditions"),
        timestamp("referred_at"),
        timestamp("opened_at"),
        string("clinician_id", 100, nullable=True),
        timestamp("discharged_at", nullable=True),
        string("discharge_reason", 20, nullable=True),
        string("discharge_note", 2000, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("referral_id"),
    )
    index_columns("therapy_episode", "clinician_id", "patient_id", "referred_at", "status")

    op.create_table(
        "appointment",
        uuid("id"),
        uuid("episode_id"),
        uuid("patient_id"),
        string("clinician_id", 100),
        string("kind", 12),
        string("mode", 10),
        string("location", 200, nullable=True),
        timestamp("start"),
        timestamp("end"),
        string("status", 20),
        string("cancelled_by", 10, nullable=True),
        string("status_reason", 1000, nullable=True),
        string("booked_by", 100),
        timestamp("booked_at"),
        sa.ForeignKeyConstraint(["episode_id"], ["therapy_episode.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("appointment", "episode_id")
    # No double booking: one live appointment per clinician, and per patient, per start time.
    holds_the_slot = sa.text("status IN ('booked', 'arrived', 'fulfilled')")
    for name, holder in (
        ("uq_appointment_clinician_slot", "clinician_id"),
        ("uq_appointment_patient_slot", "patient_id"),
    ):
        op.create_index(
            name,
            "appointment",
            [holder, "start"],
            unique=True,
            sqlite_where=holds_the_slot,
            postgresql_where=holds_the_slot,
        )

    op.create_table(
        "clinician_leave",
        integer("id"),
        string("clinician_id", 100),
        date("first_day"),
        date("last_day"),
        sa.ForeignKeyConstraint(["clinician_id"], ["clinician.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("clinician_leave", "clinician_id")

    op.create_table(
        "working_hours",
        integer("id"),
        string("clinician_id", 100),
        integer("weekday"),
        time("start"),
        time("end"),
        sa.ForeignKeyConstraint(["clinician_id"], ["clinician.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("working_hours", "clinician_id")

    op.create_table(
        "session_measure",
        uuid("id"),
        uuid("appointment_id"),
        uuid("episode_id"),
        string("instrument", 8),
        json("items"),
        integer("total"),
        string("band", 20),
        string("recorded_by", 100),
        timestamp("recorded_at"),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointment.id"]),
        sa.ForeignKeyConstraint(["episode_id"], ["therapy_episode.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("session_measure", "appointment_id", "episode_id")


def downgrade() -> None:
    for table in (
        "session_measure",
        "working_hours",
        "clinician_leave",
        "appointment",
        "therapy_episode",
        "clinician",
    ):
        op.drop_table(table)
    drop_platform_tables()
