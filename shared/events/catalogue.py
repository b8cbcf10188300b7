"""Typed payloads of every event, by type and schema version.

Payloads carry ids, codes and scores, never names, birth dates, NHS numbers or free
text, so no event can leak who a patient is. A changed payload gets a new version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

ReferralTarget = Literal["ketamine-infusion", "psychology", "pain-mdt"]
ReferralPriority = Literal["routine", "urgent"]
Condition = Literal[
    "fibromyalgia", "neuropathic-pain", "crps", "spinal-pain", "depression", "other"
]


class PatientRegistered(msgspec.Struct, frozen=True, kw_only=True):
    patient_id: UUID


class BaselineScores(msgspec.Struct, frozen=True, kw_only=True):
    phq9_total: int | None = None
    phq9_item9: int | None = None
    pain_nrs: int | None = None


class ReferralReceived(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    priority: ReferralPriority
    conditions: list[Condition]
    referrer_role: str
    prior_treatment_count: int
    received_at: datetime
    baseline: BaselineScores | None = None


CATALOGUE: dict[tuple[str, int], type[msgspec.Struct]] = {
    ("patient.registered", 1): PatientRegistered,
    ("referral.received", 1): ReferralReceived,
}


def payload_type(event_type: str, schema_version: int) -> type[msgspec.Struct] | None:
    return CATALOGUE.get((event_type, schema_version))
