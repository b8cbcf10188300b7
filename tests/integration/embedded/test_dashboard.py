"""The web dashboard over the embedded app: sign-in, each role's pages, the forms."""

from __future__ import annotations

import re
from typing import Any, cast
from uuid import UUID

from services.coordinator.models import AlertAction, MdtReview, PathwayAlert
from services.referrals.models import Referral
from shared.auth import SESSION_COOKIE, Role
from shared.clock import clinic_clock
from tests.embedded import Embedded, referral_body, register

from .test_infusions_api import Embedded as InfusionClinic
from .test_infusions_api import on_the_day, planned_course, schedule, step
from .test_mdt_reviews import eventually, referred


def with_csrf(embedded: Embedded, form: dict[str, str]) -> dict[str, str]:
    """A form as a page of this site sends it: with the CSRF token its cookie carries."""
    if "csrftoken" not in embedded.client.cookies:
        embedded.client.get("/sign-in")
    return {**form, "_csrf_token": embedded.client.cookies["csrftoken"]}


def sign_in(embedded: Embedded, user: str, role: Role) -> None:
    embedded.client.cookies.clear()
    response = embedded.client.post(
        "/sign-in",
        data=with_csrf(embedded, {"user": user, "role": role.value}),
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert SESSION_COOKIE in response.cookies


def page(embedded: Embedded, path: str, status: int = 200) -> str:
    response = embedded.client.get(path, follow_redirects=False)
    assert response.status_code == status, response.text[:500]
    return str(response.text)


def post_form(embedded: Embedded, path: str, form: dict[str, str]) -> Any:
    response = embedded.client.post(path, data=with_csrf(embedded, form), follow_redirects=False)
    assert response.status_code == 303, response.text[:500]
    return response.headers["location"]


def test_a_page_without_a_session_sends_you_to_sign_in(embedded: Embedded) -> None:
    embedded.client.cookies.clear()
    response = embedded.client.get("/status", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/sign-in")
    form = page(embedded, "/sign-in")
    assert "development identities" in form and '<label for="role">' in form


def test_sign_in_sends_each_role_to_its_page(embedded: Embedded) -> None:
    for user, role, home in [
        ("admin-kim", Role.admin, "/status"),
        ("dr-mdt-lead", Role.mdt, "/status"),
        ("psy-jones", Role.psychologist, "/inbox"),
        ("nurse-okafor", Role.infusion_clinician, "/clinic"),
    ]:
        embedded.client.cookies.clear()
        response = embedded.client.post(
            "/sign-in",
            data=with_csrf(embedded, {"user": user, "role": role.value}),
            follow_redirects=False,
        )
        assert response.headers["location"] == home
    embedded.client.cookies.clear()
    refused = embedded.client.post(
        "/sign-in", data=with_csrf(embedded, {"user": "", "role": "mdt"})
    )
    assert refused.status_code == 422 and "Choose a user name" in refused.text


def test_the_session_cookie_is_the_apis_token_and_never_crosses_sites(embedded: Embedded) -> None:
    embedded.client.cookies.clear()
    response = embedded.client.post(
        "/sign-in",
        data=with_csrf(embedded, {"user": "dr-mdt-lead", "role": "mdt"}),
        follow_redirects=False,
    )
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    # The same session reads the API (the live stream's EventSource has no header).
    assert embedded.client.get("/api/pathways?limit=1").status_code == 200


def test_admins_see_status_without_names_and_the_mdt_with_them(embedded: Embedded) -> None:
    patient_id = referred(embedded, target="psychology")
    sign_in(embedded, "admin-kim", Role.admin)
    admin_view = page(embedded, "/status")
    assert patient_id[:8] in admin_view and "Ada Example" not in admin_view
    assert f'href="/patients/{patient_id}"' not in admin_view
    page(embedded, f"/patients/{patient_id}", 403)
    sign_in(embedded, "dr-mdt-lead", Role.mdt)
    mdt_view = page(embedded, "/status?team=psychology")
    assert "Ada Example" in mdt_view and f'href="/patients/{patient_id}"' in mdt_view
    rows = page(embedded, "/status?team=psychology&fragment=rows")
    assert rows.lstrip().startswith("<tr") and "<html" not in rows


def test_status_filters_and_counts(embedded: Embedded) -> None:
    urgent = referred(embedded, target="pain-mdt", item9=2)
    sign_in(embedded, "admin-kim", Role.admin)
    flagged = page(embedded, "/status?alert_kind=phq9-item9")
    assert urgent[:8] in flagged
    count = re.search(r'id="count-patients">(\d+)<', flagged)
    assert count is not None and int(count.group(1)) >= 1
    quiet = page(embedded, "/status?alert_kind=dna-threshold")
    assert urgent[:8] not in quiet


def test_the_patient_page_charts_the_measures_with_thresholds(embedded: Embedded) -> None:
    patient_id = referred(embedded, item9=1)
    sign_in(embedded, "dr-mdt-lead", Role.mdt)
    html = page(embedded, f"/patients/{patient_id}")
    assert html.count("<svg") == 6  # the whole trajectory, then each measure (issue 13)
    assert 'aria-labelledby="trajectory-title trajectory-desc"' in html
    assert "caseness (PHQ-9 ≥ 10)" in html and "caseness (GAD-7 ≥ 8)" in html
    assert "meaningful relief (30% below baseline)" in html  # pain baseline 8 → 5.6
    assert 'role="img"' in html and "<desc" in html  # readable without the picture
    assert "phq9-item9" in html and "Record a review" in html


def test_acknowledging_an_alert_from_the_page(embedded: Embedded) -> None:
    patient_id = referred(embedded, item9=1)
    with embedded.runtime("coordinator").sessions() as session:
        (alert,) = session.exec(
            PathwayAlert.__table__.select().where(  # type: ignore[attr-defined]
                PathwayAlert.patient_id == UUID(patient_id)
            )
        ).all()
    sign_in(embedded, "dr-mdt-lead", Role.mdt)
    where = post_form(
        embedded,
        f"/patients/{patient_id}/alerts/{alert.id}",
        {"action": "acknowledge", "note": "Called the patient; safe plan in place."},
    )
    assert where.startswith(f"/patients/{patient_id}?done=")
    html = page(embedded, where)
    assert "Alert acknowledged." in html and ">acknowledged<" in html
    again = post_form(
        embedded, f"/patients/{patient_id}/alerts/{alert.id}", {"action": "acknowledge"}
    )
    assert "error=" in again  # already acknowledged: said on the page, nothing written
    # Issue 12: an urgent alert is resolved with a note; the page says what is missing.
    bare = post_form(embedded, f"/patients/{patient_id}/alerts/{alert.id}", {"action": "resolve"})
    assert "error=" in bare and "note" in bare
    resolved = post_form(
        embedded,
        f"/patients/{patient_id}/alerts/{alert.id}",
        {"action": "resolve", "note": "Seen in clinic; risk assessed."},
    )
    assert resolved.startswith(f"/patients/{patient_id}?done=")


def test_an_mdt_review_with_a_referral_from_the_page(embedded: Embedded) -> None:
    patient_id = referred(embedded)
    sign_in(embedded, "dr-mdt-lead", Role.mdt)
    where = post_form(
        embedded,
        f"/patients/{patient_id}/reviews",
        {
            "attendees": "Dr Pain, Dr Mood",
            "decision": "refer-psychology",
            "referral_reason": "CBT alongside infusions",
            "notes": "Agreed with the patient.",
        },
    )
    assert "done=" in where

    def psychology_referrals() -> list[Any]:
        with embedded.runtime("referrals").sessions() as session:
            return list(
                session.exec(
                    Referral.__table__.select().where(  # type: ignore[attr-defined]
                        Referral.patient_id == UUID(patient_id), Referral.target == "psychology"
                    )
                ).all()
            )

    # Issue 16: the referrals service makes it from the review's event.
    made = eventually(psychology_referrals, "the MDT's referral")
    assert len(made) == 1 and made[0].created_by == "dr-mdt-lead"
    html = page(embedded, f"/patients/{patient_id}")
    assert "Agreed with the patient." in html and "refer-psychology" in html
    missing = post_form(
        embedded,
        f"/patients/{patient_id}/reviews",
        {"attendees": "Dr Pain", "decision": "refer-psychology"},
    )
    assert "error=" in missing


def test_a_psychologist_triages_from_the_inbox(embedded: Embedded) -> None:
    patient_id = register(embedded)
    response = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, target="psychology"),
        headers=embedded.headers(Role.referrer),
    )
    referral_id = response.json()["id"]
    sign_in(embedded, "psy-jones", Role.psychologist)
    inbox = page(embedded, "/inbox")
    assert f'action="/inbox/{referral_id}/triage"' in inbox and "Ada Example" in inbox
    refused = post_form(embedded, f"/inbox/{referral_id}/triage", {"decision": "reject"})
    assert "error=" in refused and "reason" in refused  # the field is named
    done = post_form(embedded, f"/inbox/{referral_id}/triage", {"decision": "accept"})
    assert "done=Referral+accepted" in done
    with embedded.runtime("referrals").sessions() as session:
        referral = session.get(Referral, UUID(referral_id))
        assert referral is not None and referral.status == "accepted"
    eventually(lambda: "Nobody is waiting." not in page(embedded, "/inbox"), "the waiting list")


def test_each_role_is_kept_to_its_pages(embedded: Embedded) -> None:
    sign_in(embedded, "psy-jones", Role.psychologist)
    assert "Not for this role" in page(embedded, "/operations", 403)
    assert "Not for this role" in page(embedded, "/status", 403)
    sign_in(embedded, "nurse-okafor", Role.infusion_clinician)
    assert "Infusion clinic" in page(embedded, "/clinic")
    page(embedded, "/inbox", 403)


def test_operations_shows_every_service_pipeline(embedded: Embedded) -> None:
    sign_in(embedded, "admin-kim", Role.admin)
    html = page(embedded, "/operations")
    for service in ("referrals", "infusions", "therapy", "coordinator"):
        assert f"<td>{service}</td>" in html
    assert html.count("health-ready") == 4


def test_operations_shows_each_feed_and_reconciles_from_the_page(embedded: Embedded) -> None:
    sign_in(embedded, "admin-kim", Role.admin)
    embedded.runtime("infusions").follower().catch_up_all()
    html = page(embedded, "/operations")
    assert "<h2>Event feeds</h2>" in html
    assert "<tr><td>infusions</td><td>referrals</td>" in html
    assert 'action="/operations/therapy/reconcile"' in html
    done = post_form(embedded, "/operations/infusions/reconcile", {})
    assert "done=infusions" in done and "0+still+missing" in done


def test_a_form_posted_without_its_csrf_token_changes_nothing(embedded: Embedded) -> None:
    """Issue 14: a foreign site's form rides on the session cookie but cannot know the
    token the page carried."""
    patient_id = register(embedded)
    created = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, target="psychology"),
        headers=embedded.headers(Role.referrer),
    )
    referral_id = created.json()["id"]
    sign_in(embedded, "psy-jones", Role.psychologist)
    forged = embedded.client.post(
        f"/inbox/{referral_id}/triage",
        data={"decision": "accept"},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    with embedded.runtime("referrals").sessions() as session:
        referral = session.get(Referral, UUID(referral_id))
        assert referral is not None and referral.status == "received"
    assert 'name="_csrf_token"' in page(embedded, "/inbox")


def test_a_cookie_carried_api_call_from_another_origin_is_refused(embedded: Embedded) -> None:
    sign_in(embedded, "dr-ref", Role.referrer)
    body = {
        "given_name": "Ann",
        "family_name": "Example",
        "birth_date": "1970-01-02",
        "sex": "female",
    }
    foreign = embedded.client.post(
        "/api/patients", json=body, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403, foreign.text
    ours = embedded.client.post(
        "/api/patients", json=body, headers={"Origin": str(embedded.client.base_url).rstrip("/")}
    )
    assert ours.status_code == 201, ours.text
    # A bearer token is not ambient: an API client from anywhere is not a forged request.
    embedded.client.cookies.clear()
    bearer = embedded.client.post(
        "/api/patients",
        json=body,
        headers={**embedded.headers(Role.referrer), "Origin": "https://ehr.example"},
    )
    assert bearer.status_code == 201, bearer.text


def form_keys(html: str) -> list[str]:
    return re.findall(r'name="form_key" value="([0-9a-f]{32})"', html)


def test_a_double_submitted_form_acts_once_and_shows_the_first_result(embedded: Embedded) -> None:
    """Issue 16: every form carries its own key; a double click or a resubmitted page
    makes one change and the person sees the result of the first."""
    patient_id = referred(embedded, item9=1)
    sign_in(embedded, "dr-mdt-lead", Role.mdt)
    html = page(embedded, f"/patients/{patient_id}")
    keys = form_keys(html)
    assert len(keys) == len(set(keys)) >= 2  # the alert's form and the review's, each its own
    review_key = keys[-1]
    form = {"attendees": "Dr Pain, Dr Mood", "decision": "continue", "form_key": review_key}
    first = post_form(embedded, f"/patients/{patient_id}/reviews", form)
    second = post_form(embedded, f"/patients/{patient_id}/reviews", form)
    assert first == second and "done=" in first
    reviews = embedded.count("coordinator", MdtReview, MdtReview.patient_id == UUID(patient_id))
    assert reviews == 1

    alert_key = keys[0]
    alert_path = re.findall(r'action="(/patients/[^"]+/alerts/[^"]+)"', html)[0]
    ack = {"action": "acknowledge", "form_key": alert_key}
    assert post_form(embedded, alert_path, ack) == post_form(embedded, alert_path, ack)
    actions = embedded.count("coordinator", AlertAction)
    assert "done=" in post_form(embedded, alert_path, ack)  # the first answer, not a conflict
    assert embedded.count("coordinator", AlertAction) == actions

    # A refused form keeps nothing: corrected, the same page's form goes through.
    refer = {"attendees": "Dr Pain", "decision": "refer-psychology", "form_key": keys[-1] + "0"}
    assert "error=" in post_form(embedded, f"/patients/{patient_id}/reviews", refer)
    fixed = {**refer, "referral_reason": "CBT for low mood"}
    assert "done=" in post_form(embedded, f"/patients/{patient_id}/reviews", fixed)


def alert_of(embedded: Embedded, patient_id: str, kind: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        response = embedded.client.get(
            f"/api/pathways/{patient_id}", headers=embedded.headers(Role.mdt)
        )
        alerts = response.json()["alerts"] if response.status_code == 200 else []
        return next((a for a in alerts if a["kind"] == kind), None)

    alert: dict[str, Any] = eventually(found, f"the {kind} alert")
    return alert


def test_every_home_page_starts_with_the_alerts_its_role_owns(embedded: Embedded) -> None:
    """Issue 13: alerts owned by infusion clinicians and psychologists reach a page they
    see; each links to the patient, and nobody sees another role's alerts as theirs."""
    item9 = referred(embedded, target="pain-mdt", item9=2)
    safety = alert_of(embedded, item9, "phq9-item9")
    # The infusion clinic's helpers, over this module's app (they need no broker).
    infusions = InfusionClinic(embedded.client, embedded.app, embedded.platform, cast(Any, None))
    opened = planned_course(infusions)
    session = schedule(infusions, opened.course_id)
    try:
        on_the_day(session)
        step(infusions, session["id"], "check-in")
        high = {"phase": "before", "systolic": 165, "diastolic": 90, "heart_rate": 80, "spo2": 97}
        step(infusions, session["id"], "vitals", high)
        vitals = alert_of(embedded, opened.patient_id, "vitals-out-of-range")
        assert vitals["owner_role"] == "infusion-clinician"

        sign_in(embedded, "nurse-okafor", Role.infusion_clinician)
        clinic = page(embedded, "/clinic")
        assert clinic.index("My alerts") < clinic.index("Today")
        assert f'href="/patients/{opened.patient_id}#alert-{vitals["id"]}"' in clinic
        assert "Vitals out of range during an infusion" in clinic
        assert f"my-alert-{safety['id']}" not in clinic  # the MDT's, on another team's patient
        # Today's list: the patient by name, with a way in.
        assert f'<a href="/patients/{opened.patient_id}">Ada Example</a>' in clinic
    finally:
        clinic_clock().reset()

    sign_in(embedded, "dr-mdt-lead", Role.mdt)
    status = page(embedded, "/status")
    assert f'href="/patients/{item9}#alert-{safety["id"]}"' in status
    assert "PHQ-9 item 9: thoughts of self-harm" in status
    assert f"my-alert-{vitals['id']}" not in status  # the infusion clinician's to act on

    sign_in(embedded, "psy-jones", Role.psychologist)
    inbox = page(embedded, "/inbox")
    assert "My alerts" in inbox
    assert f"my-alert-{safety['id']}" not in inbox and f"my-alert-{vitals['id']}" not in inbox

    sign_in(embedded, "admin-kim", Role.admin)
    admin = page(embedded, "/status")
    assert "No alerts are waiting for you." in admin and "#alert-" not in admin
