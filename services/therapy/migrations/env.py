"""Alembic environment of the therapy service's database."""

from services.therapy.models import TABLES
from shared.migrations import run_env

run_env(TABLES)
