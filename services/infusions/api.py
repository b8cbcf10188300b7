"""HTTP controllers of the infusions service. The platform gives it /api/events and
/api/dead-letters; its clinical routes come with the infusions issue."""

from __future__ import annotations

from typing import Any

CONTROLLERS: tuple[Any, ...] = ()
