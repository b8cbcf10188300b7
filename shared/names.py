"""The names every carepath process knows before anything else: its services, the roles
people sign in with, and where each service answers. Standard library only, so the
`carepath` command can build its options without importing the web framework (a CLI
call starts in a fraction of a second)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum

SERVICES = ("referrals", "infusions", "therapy", "coordinator")


class Role(StrEnum):
    referrer = "referrer"
    psychologist = "psychologist"
    infusion_clinician = "infusion-clinician"
    mdt = "mdt"
    admin = "admin"
    service = "service"


def service_env(service: str, name: str) -> str:
    return f"CAREPATH_{service.upper()}_{name}"


def peer_urls(
    environ: Mapping[str, str] | None = None, default_base_url: str = "http://127.0.0.1:8000"
) -> dict[str, str]:
    """Where each service answers (`CAREPATH_<SERVICE>_URL`), else the embedded layout."""
    env = os.environ if environ is None else environ
    return {
        peer: env.get(service_env(peer, "URL"), f"{default_base_url}/{peer}").rstrip("/")
        for peer in SERVICES
    }
