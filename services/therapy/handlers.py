"""Events the therapy service consumes: an accepted psychology referral opens an episode."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import msgspec
from sqlmodel import Session, select

from services.therapy.models import TherapyEpisode
from shared.events import Envelope, Subject, new_event
from shared.events.catalogue import TherapyEpisodeOpened
from shared.outbox import add_event


def handle_event(session: Session, envelope: Envelope) -> None:
    if envelope.type != "referral.accepted" or envelope.data["target"] != "psychology":
        return
    referral_id = UUID(str(envelope.data["referral_id"]))
    # The inbox stops a redelivery; the unique referral_id stops a replayed message.
    if session.exec(
        select(TherapyEpisode).where(TherapyEpisode.referral_id == referral_id)
    ).first():
        return
    now = datetime.now(UTC)
    received = envelope.data.get("received_at")
    referred_at = msgspec.convert(received, datetime) if received else envelope.occurred_at
    episode = TherapyEpisode(
        patient_id=envelope.patient_id,
        referral_id=referral_id,
        status="waitlist",
        priority=envelope.data["priority"],
        conditions=list(envelope.data["conditions"]),
        referred_at=referred_at,
        opened_at=now,
    )
    session.add(episode)
    add_event(
        session,
        new_event(
            type="therapy.episode.opened",
            data=TherapyEpisodeOpened(
                episode_id=episode.id,
                referral_id=referral_id,
                priority=envelope.data["priority"],
                referred_at=referred_at,
                opened_at=now,
            ),
            producer="therapy",
            patient_id=envelope.patient_id,
            subject=Subject(type="therapy-episode", id=str(episode.id)),
            actor=envelope.actor,
            correlation_id=envelope.correlation_id,
            causation_id=str(envelope.event_id),
        ),
    )
