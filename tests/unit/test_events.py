"""The event envelope and the catalogue (DESIGN.md, "The event envelope")."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest

from shared.events import (
    Actor,
    InvalidEvent,
    Subject,
    consumers_of,
    decode_envelope,
    encode_envelope,
    new_event,
    queue_name,
)
from shared.events.catalogue import CATALOGUE, PatientRegistered, ReferralReceived

from .factories import patient_registered, referral_received

PATIENT = UUID("0f7c1f6e-52a4-4c55-9d4c-2b0d9ad4f001")


def _event_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "type": "patient.registered",
        "data": PatientRegistered(patient_id=PATIENT),
        "producer": "referrals",
        "patient_id": PATIENT,
        "subject": Subject(type="patient", id=str(PATIENT)),
        "actor": Actor(user_id="dr-test", role="referrer"),
        "correlation_id": "corr-1",
    }
    kwargs.update(overrides)
    return kwargs


def _valid_raw() -> dict[str, Any]:
    return encode_envelope(referral_received(PATIENT, sequence=1))


# --- new_event ------------------------------------------------------------------------


def test_new_event_refuses_a_type_not_in_the_catalogue() -> None:
    with pytest.raises(InvalidEvent, match="not in the event catalogue"):
        new_event(**_event_kwargs(type="patient.deleted"))


def test_new_event_refuses_an_unknown_schema_version_of_a_known_type() -> None:
    with pytest.raises(InvalidEvent):
        new_event(**_event_kwargs(schema_version=2))


def test_new_event_refuses_a_payload_of_another_events_struct() -> None:
    wrong = referral_received(PATIENT).data
    payload = msgspec.convert(wrong, ReferralReceived)
    with pytest.raises(InvalidEvent, match="PatientRegistered"):
        new_event(**_event_kwargs(data=payload))


def test_new_event_leaves_sequence_zero_for_the_outbox_to_assign() -> None:
    envelope = new_event(**_event_kwargs())
    assert envelope.sequence == 0
    assert envelope.data == {"patient_id": str(PATIENT)}
    assert envelope.occurred_at.tzinfo is not None


# --- decode_envelope ------------------------------------------------------------------


def test_decode_accepts_an_encoded_envelope_round_trip() -> None:
    original = msgspec.structs.replace(new_event(**_event_kwargs()), sequence=1)
    raw = encode_envelope(original)
    # It travels as JSON, so it must survive a JSON round trip as well.
    decoded = decode_envelope(msgspec.json.decode(msgspec.json.encode(raw)))
    assert decoded == original


@pytest.mark.parametrize("field", ["event_id", "type", "occurred_at", "patient_id", "data"])
def test_decode_rejects_an_envelope_missing_a_field(field: str) -> None:
    raw = _valid_raw()
    del raw[field]
    with pytest.raises(InvalidEvent, match=field):
        decode_envelope(raw)


def test_decode_rejects_a_naive_occurred_at() -> None:
    raw = _valid_raw()
    raw["occurred_at"] = "2025-03-03T09:00:00"
    with pytest.raises(InvalidEvent, match="time zone"):
        decode_envelope(raw)


def test_decode_rejects_sequence_zero() -> None:
    raw = _valid_raw()
    raw["sequence"] = 0
    with pytest.raises(InvalidEvent, match="sequence"):
        decode_envelope(raw)


def test_decode_rejects_a_payload_failing_its_schema() -> None:
    raw = _valid_raw()
    raw["data"]["target"] = "nope"
    with pytest.raises(InvalidEvent, match=r"referral\.received data"):
        decode_envelope(raw)


def test_decode_rejects_a_payload_missing_a_required_field() -> None:
    raw = _valid_raw()
    del raw["data"]["referral_id"]
    with pytest.raises(InvalidEvent, match="referral_id"):
        decode_envelope(raw)


def test_decode_rejects_an_unknown_type_by_default() -> None:
    raw = _valid_raw()
    raw["type"] = "research.survey.sent"
    with pytest.raises(InvalidEvent, match="not in the catalogue"):
        decode_envelope(raw)


def test_decode_keeps_an_unknown_type_when_allowed() -> None:
    raw = _valid_raw()
    raw["type"] = "research.survey.sent"
    raw["data"] = {"anything": [1, 2, 3]}
    envelope = decode_envelope(raw, allow_unknown=True)
    assert envelope.type == "research.survey.sent"
    assert envelope.data == {"anything": [1, 2, 3]}


def test_decode_still_checks_known_types_when_unknown_ones_are_allowed() -> None:
    raw = _valid_raw()
    raw["data"]["target"] = "nope"
    with pytest.raises(InvalidEvent):
        decode_envelope(raw, allow_unknown=True)


def test_decode_rejects_a_value_that_is_not_an_envelope_at_all() -> None:
    with pytest.raises(InvalidEvent):
        decode_envelope(["not", "an", "envelope"])


# --- event ids ------------------------------------------------------------------------


def test_event_ids_are_uuid_version_7() -> None:
    envelope = new_event(**_event_kwargs())
    assert envelope.event_id.version == 7


def test_event_ids_sort_in_creation_order() -> None:
    created = [new_event(**_event_kwargs()).event_id for _ in range(200)]
    assert sorted(created) == created
    assert len(set(created)) == len(created)


def test_event_id_carries_a_millisecond_timestamp_no_earlier_than_creation() -> None:
    before_ms = time.time_ns() // 1_000_000
    event_id = new_event(**_event_kwargs()).event_id
    assert event_id.int >> 80 >= before_ms


# --- subscriptions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_type",
    ["patient.registered", "referral.received", "referral.accepted", "something.new"],
)
def test_coordinator_consumes_every_event_type(event_type: str) -> None:
    assert "coordinator" in consumers_of(event_type)


def test_referral_accepted_fans_out_to_infusions_and_therapy() -> None:
    assert consumers_of("referral.accepted") == {"coordinator", "infusions", "therapy"}


def test_an_unsubscribed_type_goes_only_to_the_coordinator() -> None:
    assert consumers_of("patient.registered") == {"coordinator"}


def test_queue_names_are_per_service() -> None:
    assert queue_name("therapy") == "therapy.events"


# --- no patient-identifying data in events ----------------------------------------------

IDENTIFYING = ("name", "birth", "dob", "nhs", "address", "postcode", "phone", "email")


@pytest.mark.parametrize("struct", sorted(set(CATALOGUE.values()), key=lambda s: s.__name__))
def test_catalogue_payloads_have_no_identifying_fields(struct: type[msgspec.Struct]) -> None:
    fields = [field.lower() for field in struct.__struct_fields__]
    leaks = [field for field in fields if any(word in field for word in IDENTIFYING)]
    assert leaks == []


def test_payloads_checked_include_patient_registered_and_referral_received() -> None:
    assert PatientRegistered in CATALOGUE.values()
    assert ReferralReceived in CATALOGUE.values()


def test_encoded_envelopes_carry_no_identifying_keys() -> None:
    def keys(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [k for key, item in value.items() for k in [str(key), *keys(item)]]
        if isinstance(value, list):
            return [k for item in value for k in keys(item)]
        return []

    for envelope in (patient_registered(PATIENT), referral_received(PATIENT)):
        encoded = keys(encode_envelope(envelope))
        assert "patient_id" in encoded
        leaks = [key for key in encoded if any(word in key.lower() for word in IDENTIFYING)]
        assert leaks == []


def test_envelope_time_is_utc_when_not_given() -> None:
    before = datetime.now(UTC)
    envelope = new_event(**_event_kwargs())
    assert envelope.occurred_at >= before
    assert envelope.occurred_at.utcoffset() is not None
    assert envelope.occurred_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_distinct_events_get_distinct_ids_even_for_the_same_patient() -> None:
    first = new_event(**_event_kwargs(patient_id=uuid4()))
    second = new_event(**_event_kwargs(patient_id=first.patient_id))
    assert first.event_id != second.event_id
