"""Events the referrals service consumes.

Closing the loop (a course or episode ended → close the referral) comes with the
referrals issue; until then the service acknowledges what it is sent.
"""

from __future__ import annotations

from sqlmodel import Session

from shared.events import Envelope


def handle_event(session: Session, envelope: Envelope) -> None:
    """Acknowledge: the inbox row written by the consumer records that it arrived."""
