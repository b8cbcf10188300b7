"""Alembic, one migration history per service, run from code.

Each service keeps its history in ``services/<name>/migrations``; its ``env.py`` hands
the names of the tables it owns to ``run_env`` so autogenerate never touches another
service's tables (all of them share SQLModel's one metadata object in this process).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import pool
from sqlmodel import SQLModel, create_engine

import shared.tables  # noqa: F401 - the platform tables join the metadata

# Every service's database has these, beside its own tables.
PLATFORM_TABLES = frozenset({"outbox", "inbox", "dead_letter", "audit_log", "feed_position"})


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    # ConfigParser would read a literal '%' in a password as interpolation.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(migrations_dir: Path, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(migrations_dir, database_url), revision)


def run_env(own_tables: Iterable[str]) -> None:
    """The body of every service's env.py."""
    tables = PLATFORM_TABLES | frozenset(own_tables)

    def include_object(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
        if type_ == "table":
            return name in tables
        table = getattr(obj, "table", None)
        return table is None or table.name in tables

    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=SQLModel.metadata,
            include_object=include_object,
            literal_binds=True,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            include_object=include_object,
            # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def create_platform_tables() -> None:
    """The outbox, inbox, dead letters and audit log as every service's first migration
    made them (the one copy of their DDL; later changes have their own helpers)."""
    import sqlalchemy as sa
    from alembic import op
    from sqlmodel.sql.sqltypes import AutoString

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", AutoString(length=1), nullable=False),
        sa.Column("outcome", AutoString(length=2), nullable=False),
        sa.Column("agent_user", AutoString(length=100), nullable=False),
        sa.Column("agent_role", AutoString(length=40), nullable=False),
        sa.Column("entity_type", AutoString(length=60), nullable=False),
        sa.Column("entity_id", AutoString(length=64), nullable=True),
        sa.Column("patient_id", sa.Uuid(), nullable=True),
        sa.Column("path", AutoString(length=300), nullable=False),
        sa.Column("detail", AutoString(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_recorded"), ["recorded"], unique=False)

    op.create_table(
        "dead_letter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", AutoString(length=64), nullable=False),
        sa.Column("queue_name", AutoString(length=100), nullable=False),
        sa.Column("actor_name", AutoString(length=100), nullable=False),
        sa.Column("event_id", AutoString(length=64), nullable=True),
        sa.Column("event_type", AutoString(length=100), nullable=True),
        sa.Column("error", AutoString(length=500), nullable=False),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replay_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("type", AutoString(length=100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_table(
        "outbox",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("type", AutoString(length=100), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("subject_type", AutoString(length=50), nullable=False),
        sa.Column("subject_id", AutoString(length=64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope", sa.JSON(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("send_attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("event_id"),
        sa.UniqueConstraint("subject_type", "subject_id", "sequence", name="uq_outbox_sequence"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index("ix_outbox_unsent", ["sent_at", "position"], unique=False)


def drop_platform_tables() -> None:
    from alembic import op

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_unsent")
        batch_op.drop_index(batch_op.f("ix_outbox_patient_id"))

    op.drop_table("outbox")
    op.drop_table("inbox")
    op.drop_table("dead_letter")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_recorded"))
        batch_op.drop_index(batch_op.f("ix_audit_log_patient_id"))

    op.drop_table("audit_log")


def add_feed_tracking() -> None:
    """The commit-ordered feed and the consumer's feed positions (issue 10), the same in
    every service's history: call it from that service's migration."""
    import sqlalchemy as sa
    from alembic import op

    # Rows written before this migration all committed long ago: txid 0 keeps them first.
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(
            sa.Column("txid", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.create_index("ix_outbox_feed", ["txid", "position"], unique=False)
    op.create_table(
        "feed_position",
        sa.Column("producer", sa.String(length=40), nullable=False),
        sa.Column("cursor", sa.String(length=45), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("caught_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("behind", sa.Integer(), nullable=False),
        sa.Column("recovered", sa.Integer(), nullable=False),
        sa.Column("failing_event_id", sa.String(length=64), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("producer"),
    )


def drop_feed_tracking() -> None:
    from alembic import op

    op.drop_table("feed_position")
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_index("ix_outbox_feed")
        batch_op.drop_column("txid")
