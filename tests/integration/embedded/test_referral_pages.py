"""The referrer's work in the browser (issue 13), over the embedded app: trace or register
the patient, write a referral, see its status, answer the team's question; every step
through the referrals API as the signed-in referrer."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus
from uuid import UUID

from services.referrals.models import Referral
from shared.auth import Role
from tests.embedded import Embedded

from .test_dashboard import page, post_form, sign_in
from .test_patient_trace import nhs_number

REFERRER = "dr-gp-pages"


def said(location: str) -> str:
    return unquote_plus(location)


def referral_form(patient_id: str, **fields: str) -> dict[str, str]:
    return {
        "patient_id": patient_id,
        "target": "psychology",
        "priority": "routine",
        "reason": "Low mood for a year alongside fibromyalgia",
        "condition-fibromyalgia": "yes",
        "condition-depression": "yes",
        "referrer_name": "Dr Patel",
        "referrer_role": "GP",
        "referrer_organisation": "Hill Surgery",
        "pain_nrs": "7",
        **{f"phq9-{n}": "2" for n in range(1, 10)},
        **fields,
    }


def test_a_referrer_finds_the_patient_refers_and_answers_the_question(
    embedded: Embedded,
) -> None:
    number = nhs_number(733_100_001)
    sign_in(embedded, REFERRER, Role.referrer)
    assert "No referrals yet." in page(embedded, "/referrals/mine")

    # Not registered: the trace says only that nothing matches.
    trace = {"nhs_number": number, "birth_date": "1968-05-04", "family_name": "Rowe"}
    missing = said(post_form(embedded, "/referrals/trace", trace))
    assert "No registered patient matches these details" in missing
    patient = {
        "given_name": "Iris",
        "family_name": "Rowe",
        "birth_date": "1968-05-04",
        "sex": "female",
        "nhs_number": number,
        "form_key": "p-1",
    }
    registered = post_form(embedded, "/referrals/patients", patient)
    patient_id = registered.split("patient_id=")[1]
    assert "Referring <strong>Iris Rowe</strong>" in page(embedded, registered)
    # Traced by the three details, the same patient.
    found = post_form(
        embedded, "/referrals/trace", trace | {"nhs_number": number[:3] + " " + number[3:]}
    )
    assert found.endswith(f"patient_id={patient_id}")

    # A referral missing its reason is refused naming it; the corrected one goes once.
    empty = said(post_form(embedded, "/referrals/new", referral_form(patient_id, reason="")))
    assert "error=Not referred" in empty and "reason" in empty
    sent = referral_form(patient_id, form_key="r-1")
    for _ in range(2):
        assert "done=Referral sent" in said(post_form(embedded, "/referrals/new", sent))
    with embedded.runtime("referrals").sessions() as session:
        rows = session.exec(
            Referral.__table__.select().where(  # type: ignore[attr-defined]
                Referral.patient_id == UUID(patient_id)
            )
        ).all()
    (referral,) = rows
    assert (referral.target, referral.created_by) == ("psychology", REFERRER)
    assert referral.baseline["phq9_items"] == [2] * 9 and referral.baseline["pain_nrs"] == 7

    # The team asks; the question reaches the referrer's page and is answered there.
    asked = embedded.client.post(
        f"/api/referrals/{referral.id}/triage",
        json={"decision": "request-info", "question": "Any thoughts of self-harm recently?"},
        headers=embedded.headers(Role.psychologist),
    )
    assert asked.status_code == 200, asked.text
    mine = page(embedded, "/referrals/mine")
    assert "Any thoughts of self-harm recently?" in mine and "Iris Rowe" in mine
    answer = {"answer": "None reported; safety net given.", "form_key": "a-1"}
    answered = said(post_form(embedded, f"/referrals/{referral.id}/answer", answer))
    assert "done=Answer sent" in answered
    with embedded.runtime("referrals").sessions() as session:
        back = session.get(Referral, referral.id)
        assert back is not None and back.status == "received"
    assert re.search(
        r"<td>psychology</td><td>routine</td><td>received</td>", page(embedded, "/referrals/mine")
    )


def test_sign_in_takes_a_referrer_to_their_referrals(embedded: Embedded) -> None:
    embedded.client.cookies.clear()
    sign_in(embedded, "dr-gp-patel", Role.referrer)
    response = embedded.client.get("/", follow_redirects=False)
    assert response.headers["location"] == "/referrals/mine"
    page(embedded, "/status", 403)
