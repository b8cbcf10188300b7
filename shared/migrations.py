"""Alembic, one migration history per service, run from code.

Each service keeps its history in ``services/<name>/migrations``; its ``env.py`` hands
the names of the tables it owns to ``run_env`` so autogenerate never touches another
service's tables (all of them share SQLModel's one metadata object in this process).

Before the first release each history was squashed into one baseline migration that
keeps the old head's revision id, so a database already at that revision stays valid; a
database at an older one (only a developer's, nothing was ever deployed) must be
recreated. The DDL in a migration is frozen text, never read
from the models: the column and table helpers below are part of that text, so once a
release has run them they must not change (a change to the schema is a new migration).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import pool
from sqlmodel import SQLModel, create_engine
from sqlmodel.sql.sqltypes import AutoString

import shared.tables  # noqa: F401 - the platform tables join the metadata

# Every service's database has these, beside its own tables.
PLATFORM_TABLES = frozenset(
    {"outbox", "inbox", "dead_letter", "audit_log", "feed_position", "idempotency_key"}
)


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


class ColumnOf:
    """Columns of one SQL type for the DDL a migration freezes: NOT NULL unless
    nullable=True, as a model field that is not Optional."""

    def __init__(self, type_: sa.types.TypeEngine[Any]) -> None:
        self.type_ = type_

    def __call__(
        self, name: str, *, nullable: bool = False, server_default: str | None = None
    ) -> sa.Column[Any]:
        return sa.Column(name, self.type_, nullable=nullable, server_default=server_default)


# The types autogenerate writes for the models' fields.
uuid = ColumnOf(sa.Uuid())
integer = ColumnOf(sa.Integer())
number = ColumnOf(sa.Float())
boolean = ColumnOf(sa.Boolean())
json = ColumnOf(sa.JSON())
date = ColumnOf(sa.Date())
time = ColumnOf(sa.Time())
timestamp = ColumnOf(sa.DateTime(timezone=True))
binary = ColumnOf(sa.LargeBinary())


def string(
    name: str, length: int, *, nullable: bool = False, server_default: str | None = None
) -> sa.Column[Any]:
    return ColumnOf(AutoString(length=length))(
        name, nullable=nullable, server_default=server_default
    )


def index_columns(table: str, *columns: str) -> None:
    """One index per column, named as SQLModel names the index of an ``index=True`` field."""
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column])


def create_platform_tables() -> None:
    """The outbox, inbox, dead letters, audit log and feed positions: the one copy of
    their DDL, called from every service's baseline migration."""
    op.create_table(
        "audit_log",
        integer("id"),
        timestamp("recorded"),
        string("action", 1),
        string("outcome", 2),
        string("agent_user", 100),
        string("agent_role", 40),
        string("entity_type", 60),
        string("entity_id", 64, nullable=True),
        uuid("patient_id", nullable=True),
        string("path", 300),
        string("detail", 300, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    index_columns("audit_log", "patient_id", "recorded")

    op.create_table(
        "dead_letter",
        integer("id"),
        string("message_id", 64),
        string("queue_name", 100),
        string("actor_name", 100),
        string("event_id", 64, nullable=True),
        string("event_type", 100, nullable=True),
        string("error", 500),
        json("message"),
        timestamp("failed_at"),
        timestamp("replayed_at", nullable=True),
        integer("replay_count"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )

    op.create_table(
        "inbox",
        uuid("event_id"),
        string("type", 100),
        timestamp("received_at"),
        sa.PrimaryKeyConstraint("event_id"),
    )

    op.create_table(
        "outbox",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        uuid("event_id"),
        string("type", 100),
        uuid("patient_id"),
        string("subject_type", 50),
        string("subject_id", 64),
        integer("sequence"),
        timestamp("occurred_at"),
        json("envelope"),
        timestamp("sent_at", nullable=True),
        integer("send_attempts"),
        sa.Column("txid", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("position"),
        # In this order SQLite numbers its unnamed unique indexes as the squashed history did.
        sa.UniqueConstraint("subject_type", "subject_id", "sequence", name="uq_outbox_sequence"),
        sa.UniqueConstraint("event_id"),
    )
    index_columns("outbox", "patient_id")
    op.create_index("ix_outbox_unsent", "outbox", ["sent_at", "position"])
    op.create_index("ix_outbox_feed", "outbox", ["txid", "position"])

    op.create_table(
        "feed_position",
        string("producer", 40),
        string("cursor", 45),
        timestamp("created_at"),
        timestamp("caught_up_at", nullable=True),
        integer("behind"),
        integer("recovered"),
        string("failing_event_id", 64, nullable=True),
        integer("failures"),
        sa.PrimaryKeyConstraint("producer"),
    )


def drop_platform_tables() -> None:
    for table in ("feed_position", "outbox", "inbox", "dead_letter", "audit_log"):
        op.drop_table(table)


def create_idempotency_table() -> None:
    """The stored answers to requests sent with an Idempotency-Key (shared.idempotency):
    the one copy of their DDL, called from every service's migration that adds them."""
    op.create_table(
        "idempotency_key",
        string("caller", 150),
        string("key", 255),
        string("method", 10),
        string("path", 300),
        string("body_sha256", 64),
        integer("status"),
        string("media_type", 100),
        binary("response"),
        timestamp("created_at"),
        timestamp("expires_at"),
        sa.PrimaryKeyConstraint("caller", "key"),
    )
    index_columns("idempotency_key", "expires_at")


def drop_idempotency_table() -> None:
    op.drop_table("idempotency_key")


def create_urgent_alert_table() -> None:
    """The copy of the coordinator's open urgent alerts (shared.urgent_alerts) kept by a
    service that discharges or closes: the one copy of its DDL."""
    op.create_table(
        "urgent_alert",
        string("alert_id", 64),
        uuid("patient_id"),
        string("kind", 40),
        string("owner_role", 30),
        timestamp("raised_at"),
        timestamp("resolved_at", nullable=True),
        sa.PrimaryKeyConstraint("alert_id"),
    )
    index_columns("urgent_alert", "patient_id")


def drop_urgent_alert_table() -> None:
    op.drop_index("ix_urgent_alert_patient_id", table_name="urgent_alert")
    op.drop_table("urgent_alert")
