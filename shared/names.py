"""The names every carepath process knows before anything else: its services and the
roles people sign in with. Standard library only, so the `carepath` command can build
its options without importing the web framework (a CLI call starts in a fraction of a
second)."""

from __future__ import annotations

from enum import StrEnum

SERVICES = ("referrals", "infusions", "therapy", "coordinator")


class Role(StrEnum):
    referrer = "referrer"
    psychologist = "psychologist"
    infusion_clinician = "infusion-clinician"
    mdt = "mdt"
    admin = "admin"
    service = "service"
