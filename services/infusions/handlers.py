"""Events the infusions service consumes: an accepted ketamine referral opens a course."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from sqlmodel import Session, select

from services.infusions.models import InfusionCourse
from shared.events import Envelope, Subject, new_event
from shared.events.catalogue import InfusionCourseOpened
from shared.outbox import add_event


def handle_event(session: Session, envelope: Envelope) -> None:
    if envelope.type != "referral.accepted" or envelope.data["target"] != "ketamine-infusion":
        return
    referral_id = UUID(str(envelope.data["referral_id"]))
    # The inbox stops a redelivery; the unique referral_id stops a second course from a
    # re-sent event with a new id (an operator's replay of an old message, say).
    if session.exec(
        select(InfusionCourse).where(InfusionCourse.referral_id == referral_id)
    ).first():
        return
    now = datetime.now(UTC)
    course = InfusionCourse(
        patient_id=envelope.patient_id,
        referral_id=referral_id,
        status="planned",
        priority=envelope.data["priority"],
        conditions=list(envelope.data["conditions"]),
        referral_baseline=envelope.data.get("baseline"),
        opened_at=now,
    )
    session.add(course)
    add_event(
        session,
        new_event(
            type="infusion.course.opened",
            data=InfusionCourseOpened(
                course_id=course.id,
                referral_id=referral_id,
                priority=envelope.data["priority"],
                opened_at=now,
            ),
            producer="infusions",
            patient_id=envelope.patient_id,
            subject=Subject(type="infusion-course", id=str(course.id)),
            actor=envelope.actor,
            correlation_id=envelope.correlation_id,
            causation_id=str(envelope.event_id),
        ),
    )
