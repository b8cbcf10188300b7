"""Events the infusions service consumes.

referral.accepted opens a course once the infusions issue lands.
"""

from __future__ import annotations

from sqlmodel import Session

from shared.events import Envelope


def handle_event(session: Session, envelope: Envelope) -> None:
    """Acknowledge: the inbox row written by the consumer records that it arrived."""
