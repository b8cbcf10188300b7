"""Each service's Alembic history builds exactly the tables its models declare."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

from services.registry import spec_of
from shared.db import make_engine
from shared.migrations import PLATFORM_TABLES, alembic_config, upgrade
from shared.settings import SERVICES


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_match_the_models_and_downgrade_cleanly(tmp_path: Path, service: str) -> None:
    spec = spec_of(service)
    url = f"sqlite:///{tmp_path / service}.sqlite3"
    upgrade(spec.migrations_dir, url)
    config = alembic_config(spec.migrations_dir, url)
    # Raises if autogenerate would add, drop or alter anything: models and history agree.
    command.check(config)
    tables = set(inspect(make_engine(url)).get_table_names()) - {"alembic_version"}
    own = set(__import__(f"services.{service}.models", fromlist=["TABLES"]).TABLES)
    assert tables == PLATFORM_TABLES | own

    command.downgrade(config, "base")
    assert set(inspect(make_engine(url)).get_table_names()) <= {"alembic_version"}
    upgrade(spec.migrations_dir, url)
    command.check(config)
