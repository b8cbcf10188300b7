"""infusions baseline: infu_0001 to infu_0003 squashed into one (see shared.migrations)"""

import sqlalchemy as sa
from alembic import op

from shared.migrations import (
    create_platform_tables,
    drop_platform_tables,
    index_columns,
    integer,
    json,
    number,
    string,
    timestamp,
    uuid,
)

revision = "infu_0003"
down_revision: str | None = None


def upgrade() -> None:
    create_platform_tables()

    op.create_table(
        "infusion_course",
        uuid("id"),
        uuid("patient_id"),
        uuid("referral_id"),
        string("status", 12),
        string("priority", 10),
        json("conditions"),
        json("referral_baseline", nullable=True),
        timestamp("opened_at"),
        string("status_reason", 1000, nullable=True),
        timestamp("closed_at", nullable=True),
        string("close_reason", 20, nullable=True),
        timestamp("maintenance_due_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("referral_id"),
    )
    index_columns("infusion_course", "maintenance_due_at", "patient_id", "status")

    op.create_table(
        "dosing_plan",
        uuid("id"),
        uuid("course_id"),
        string("indication", 12),
        number("weight_kg"),
        number("dose_mg_per_kg", nullable=True),
        integer("infusion_minutes", nullable=True),
        number("rate_mg_per_kg_per_h", nullable=True),
        number("duration_hours", nullable=True),
        number("total_mg"),
        number("rate_mg_per_h"),
        integer("induction_count"),
        integer("induction_spacing_days"),
        integer("maintenance_interval_days", nullable=True),
        json("override", nullable=True),
        string("agreed_by", 100),
        timestamp("agreed_at"),
        sa.ForeignKeyConstraint(["course_id"], ["infusion_course.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("dosing_plan", "course_id")

    op.create_table(
        "eligibility_assessment",
        uuid("id"),
        uuid("course_id"),
        string("assessed_by", 100),
        timestamp("assessed_at"),
        number("weight_kg"),
        integer("systolic"),
        integer("diastolic"),
        integer("heart_rate"),
        number("opioid_mme_per_day"),
        integer("pain_nrs"),
        json("phq9_items"),
        integer("phq9_total"),
        json("prior_treatments"),
        json("checklist"),
        json("overrides"),
        string("outcome", 20),
        sa.ForeignKeyConstraint(["course_id"], ["infusion_course.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("eligibility_assessment", "course_id")

    op.create_table(
        "infusion_session",
        uuid("id"),
        uuid("course_id"),
        uuid("patient_id"),
        uuid("plan_id"),
        integer("number"),
        string("kind", 12),
        string("status", 12),
        timestamp("scheduled_start"),
        timestamp("scheduled_end"),
        timestamp("started_at", nullable=True),
        timestamp("ended_at", nullable=True),
        string("status_reason", 1000, nullable=True),
        number("planned_mg"),
        number("given_mg", nullable=True),
        integer("pain_before", nullable=True),
        integer("pain_after", nullable=True),
        integer("mood_before", nullable=True),
        integer("mood_after", nullable=True),
        json("phq9_items", nullable=True),
        integer("phq9_total", nullable=True),
        sa.ForeignKeyConstraint(["course_id"], ["infusion_course.id"]),
        sa.ForeignKeyConstraint(["plan_id"], ["dosing_plan.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("infusion_session", "course_id", "patient_id", "scheduled_start", "status")

    op.create_table(
        "adverse_event",
        integer("id"),
        uuid("session_id"),
        timestamp("at"),
        string("code", 20),
        string("severity", 10),
        string("note", 2000, nullable=True),
        string("recorded_by", 100),
        sa.ForeignKeyConstraint(["session_id"], ["infusion_session.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("adverse_event", "session_id")

    op.create_table(
        "vitals_reading",
        integer("id"),
        uuid("session_id"),
        timestamp("at"),
        string("phase", 8),
        integer("systolic"),
        integer("diastolic"),
        integer("heart_rate"),
        integer("spo2"),
        json("out_of_range"),
        string("recorded_by", 100),
        sa.ForeignKeyConstraint(["session_id"], ["infusion_session.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("vitals_reading", "session_id")


def downgrade() -> None:
    for table in (
        "vitals_reading",
        "adverse_event",
        "infusion_session",
        "eligibility_assessment",
        "dosing_plan",
        "infusion_course",
    ):
        op.drop_table(table)
    drop_platform_tables()
