"""Alembic environment of the referrals service's database."""

from services.referrals.models import TABLES
from shared.migrations import run_env

run_env(TABLES)
