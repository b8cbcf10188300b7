"""The infusions service's tables.

Its own clinical tables come with the infusions issue; until then its
database holds the platform tables (outbox, inbox, dead letters, audit)."""

from __future__ import annotations

TABLES: frozenset[str] = frozenset()
