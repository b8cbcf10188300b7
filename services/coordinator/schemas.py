"""Response bodies of the coordinator API: the pathway is served as the projection made it."""

from __future__ import annotations

from services.coordinator.domain import Pathway

PathwayRead = Pathway

__all__ = ["PathwayRead"]
