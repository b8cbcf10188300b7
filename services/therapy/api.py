"""HTTP controllers of the therapy service. The platform gives it /api/events and
/api/dead-letters; its clinical routes come with the therapy issue."""

from __future__ import annotations

from typing import Any

CONTROLLERS: tuple[Any, ...] = ()
