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


class ReferralAccepted(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    priority: ReferralPriority
    conditions: list[Condition]
    accepted_at: datetime
    baseline: BaselineScores | None = None


class ReferralRejected(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    rejected_at: datetime


class ReferralInfoRequested(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    requested_at: datetime


class ReferralInfoProvided(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    provided_at: datetime


class ReferralCancelled(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    previous_status: str
    cancelled_at: datetime


class ReferralClosed(msgspec.Struct, frozen=True, kw_only=True):
    referral_id: UUID
    target: ReferralTarget
    closed_at: datetime
    # The event that reported the care ended, e.g. therapy.episode.discharged.
    closed_by: str
    outcome: str


CourseCloseReason = Literal["completed", "ineligible", "declined", "stopped", "other"]
DischargeReason = Literal["completed", "declined", "did-not-attend", "moved-away", "other"]


class InfusionCourseClosed(msgspec.Struct, frozen=True, kw_only=True):
    course_id: UUID
    referral_id: UUID
    reason: CourseCloseReason
    closed_at: datetime


class TherapyEpisodeDischarged(msgspec.Struct, frozen=True, kw_only=True):
    episode_id: UUID
    referral_id: UUID
    reason: DischargeReason
    discharged_at: datetime


CATALOGUE: dict[tuple[str, int], type[msgspec.Struct]] = {
    ("patient.registered", 1): PatientRegistered,
    ("referral.received", 1): ReferralReceived,
    ("referral.accepted", 1): ReferralAccepted,
    ("referral.rejected", 1): ReferralRejected,
    ("referral.info_requested", 1): ReferralInfoRequested,
    ("referral.info_provided", 1): ReferralInfoProvided,
    ("referral.cancelled", 1): ReferralCancelled,
    ("referral.closed", 1): ReferralClosed,
    ("infusion.course.closed", 1): InfusionCourseClosed,
    ("therapy.episode.discharged", 1): TherapyEpisodeDischarged,
}


def payload_type(event_type: str, schema_version: int) -> type[msgspec.Struct] | None:
    return CATALOGUE.get((event_type, schema_version))
