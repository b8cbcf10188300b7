"""Alembic environment of the coordinator service's database."""

from services.coordinator.models import TABLES
from shared.migrations import run_env

run_env(TABLES)
