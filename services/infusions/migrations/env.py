"""Alembic environment of the infusions service's database."""

from services.infusions.models import TABLES
from shared.migrations import run_env

run_env(TABLES)
