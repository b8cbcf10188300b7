"""The embedded app over in-process HTTP: every service, SQLite files, StubBroker workers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID, uuid4

import jwt
from litestar.concurrency import get_asyncio_executor, set_asyncio_executor

from services.referrals.models import Patient, Referral
from shared.auth import Role, issue_token
from shared.settings import PlatformSettings
from shared.tables import AuditRecord, OutboxEvent
from tests.embedded import (
    SECRET,
    VALID_NHS,
    Embedded,
    assert_problem,
    patient_body,
    referral_body,
    register,
)

# --- patients ---------------------------------------------------------------------------


def test_register_patient_returns_201_with_an_id(embedded: Embedded) -> None:
    response = embedded.client.post(
        "/api/patients",
        json=patient_body(nhs_number="943 476 5919"),
        headers=embedded.headers(Role.referrer),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    patient_id = UUID(body["id"])
    assert body["nhs_number"] == "9434765919"  # stored normalised
    assert embedded.count("referrals", Patient, Patient.id == patient_id) == 1
    assert embedded.count("referrals", OutboxEvent, OutboxEvent.patient_id == patient_id) == 1


def test_invalid_nhs_number_is_a_422_naming_it_and_writes_nothing(embedded: Embedded) -> None:
    patients = embedded.count("referrals", Patient)
    outbox = embedded.count("referrals", OutboxEvent)
    response = embedded.client.post(
        "/api/patients",
        json=patient_body(nhs_number="9434765918"),
        headers=embedded.headers(Role.referrer),
    )
    body = assert_problem(response, 422, "nhs_number")
    assert "9434765918" not in response.text  # no identifier echoed back
    assert body["errors"][0]["message"]
    assert embedded.count("referrals", Patient) == patients
    assert embedded.count("referrals", OutboxEvent) == outbox


def test_duplicate_nhs_number_is_a_409_naming_the_existing_patient(embedded: Embedded) -> None:
    first = register(embedded, nhs_number=VALID_NHS[1])
    response = embedded.client.post(
        "/api/patients",
        json=patient_body(nhs_number="401 023 2137", given_name="Other"),
        headers=embedded.headers(Role.referrer),
    )
    body = assert_problem(response, 409)
    assert body["existing_patient_id"] == first
    assert embedded.count("referrals", Patient, Patient.nhs_number == VALID_NHS[1]) == 1


def test_wrong_enum_is_a_422_naming_the_field(embedded: Embedded) -> None:
    response = embedded.client.post(
        "/api/patients", json=patient_body(sex="robot"), headers=embedded.headers(Role.referrer)
    )
    assert_problem(response, 422, "sex")


def test_future_birth_date_is_a_422(embedded: Embedded) -> None:
    response = embedded.client.post(
        "/api/patients",
        json=patient_body(birth_date="2999-01-01"),
        headers=embedded.headers(Role.referrer),
    )
    assert_problem(response, 422, "birth_date")


def test_unknown_field_is_refused(embedded: Embedded) -> None:
    response = embedded.client.post(
        "/api/patients",
        json=patient_body(favourite_colour="blue"),
        headers=embedded.headers(Role.referrer),
    )
    assert response.status_code in (400, 422)
    assert response.headers["content-type"].startswith("application/problem+json")


def test_malformed_json_is_a_400(embedded: Embedded) -> None:
    response = embedded.client.post(
        "/api/patients",
        content=b'{"given_name": "Ada", ',
        headers={**embedded.headers(Role.referrer), "Content-Type": "application/json"},
    )
    assert_problem(response, 400)


def test_concurrent_writes_do_not_starve_the_handler_threads(embedded: Embedded) -> None:
    # A handler that ends holding SQLite's write lock (it re-reads after commit) must have
    # its session closed without waiting for a thread: with one handler thread and sync
    # cleanup, the next handler blocks on the lock and the cleanup queues behind it.
    previous = get_asyncio_executor()
    one_thread = ThreadPoolExecutor(max_workers=1)
    set_asyncio_executor(one_thread)
    try:
        patient_id = register(embedded)
        headers = embedded.headers(Role.referrer)

        def refer(_: int) -> int:
            body = referral_body(patient_id, target="pain-mdt")
            return embedded.client.post("/api/referrals", json=body, headers=headers).status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(refer, range(12)))
    finally:
        set_asyncio_executor(previous)
        one_thread.shutdown()
    assert statuses == [201] * 12


def test_read_patient_back(embedded: Embedded) -> None:
    patient_id = register(embedded)
    response = embedded.client.get(
        f"/api/patients/{patient_id}", headers=embedded.headers(Role.mdt)
    )
    assert response.status_code == 200
    assert response.json()["family_name"] == "Example"


def test_unknown_patient_is_a_404(embedded: Embedded) -> None:
    response = embedded.client.get(f"/api/patients/{uuid4()}", headers=embedded.headers(Role.mdt))
    assert_problem(response, 404)


# --- referrals --------------------------------------------------------------------------


def test_referral_wrong_enum_is_a_422_naming_target(embedded: Embedded) -> None:
    patient_id = register(embedded)
    response = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, target="acupuncture"),
        headers=embedded.headers(Role.referrer),
    )
    assert_problem(response, 422, "target")


def test_referral_for_an_unknown_patient_is_a_404(embedded: Embedded) -> None:
    outbox = embedded.count("referrals", OutboxEvent)
    response = embedded.client.post(
        "/api/referrals",
        json=referral_body(str(uuid4())),
        headers=embedded.headers(Role.referrer),
    )
    assert_problem(response, 404, "patient_id")
    assert embedded.count("referrals", OutboxEvent) == outbox


def test_ketamine_referral_without_prior_treatments_is_a_422(embedded: Embedded) -> None:
    """CLINICAL.md Ketamine infusions: ketamine is not first line; the referral must name
    the prior treatments tried (Cohen et al. 2018)."""
    patient_id = register(embedded)
    referrals = embedded.count("referrals", Referral)
    response = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, prior_treatments=[]),
        headers=embedded.headers(Role.referrer),
    )
    assert_problem(response, 422, "prior_treatments")
    assert embedded.count("referrals", Referral) == referrals


def test_psychology_referral_needs_no_prior_treatments(embedded: Embedded) -> None:
    patient_id = register(embedded)
    response = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, target="psychology", prior_treatments=[]),
        headers=embedded.headers(Role.referrer),
    )
    assert response.status_code == 201, response.text


def test_baseline_with_eight_phq9_items_is_a_422_naming_it(embedded: Embedded) -> None:
    """CLINICAL.md Measures: an item count that does not fit the instrument is a 422
    naming the item; nothing is stored."""
    patient_id = register(embedded)
    referrals = embedded.count("referrals", Referral)
    response = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, baseline={"phq9_items": [1] * 8}),
        headers=embedded.headers(Role.referrer),
    )
    assert_problem(response, 422, "baseline.phq9_items")
    assert embedded.count("referrals", Referral) == referrals


def test_baseline_item_out_of_range_names_the_item(embedded: Embedded) -> None:
    patient_id = register(embedded)
    response = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, baseline={"phq9_items": [0, 0, 0, 4, 0, 0, 0, 0, 0]}),
        headers=embedded.headers(Role.referrer),
    )
    assert_problem(response, 422, "baseline.phq9_items[3]")


def test_referral_scores_the_baseline_on_the_server(embedded: Embedded) -> None:
    patient_id = register(embedded)
    response = embedded.client.post(
        "/api/referrals", json=referral_body(patient_id), headers=embedded.headers(Role.referrer)
    )
    assert response.status_code == 201, response.text
    baseline = response.json()["baseline"]
    assert baseline["phq9_total"] == 11
    assert baseline["phq9_band"] == "moderate"
    assert baseline["pain_nrs"] == 8


# --- authentication, authorisation and audit ----------------------------------------------


def test_missing_token_is_a_401_and_audited_as_denied(embedded: Embedded) -> None:
    before = len(embedded.audit(AuditRecord.outcome == "4"))
    response = embedded.client.post("/api/referrals", json=referral_body(str(uuid4())))
    assert_problem(response, 401)
    denied = embedded.audit(AuditRecord.outcome == "4")
    assert len(denied) == before + 1
    assert denied[-1].agent_user == "anonymous"
    assert denied[-1].path == "/api/referrals"
    assert denied[-1].action == "C"


def test_a_token_signed_with_another_secret_is_a_401(embedded: Embedded) -> None:
    forged = issue_token(PlatformSettings(jwt_secret="z" * 40), "intruder", Role.referrer)
    response = embedded.client.get(
        f"/api/patients/{uuid4()}", headers={"Authorization": f"Bearer {forged}"}
    )
    assert_problem(response, 401)


def test_wrong_role_is_a_403_and_audited_as_denied(embedded: Embedded) -> None:
    patient_id = register(embedded)
    before = len(embedded.audit(AuditRecord.outcome == "4"))
    response = embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id),
        headers=embedded.headers(Role.admin, "admin-1"),
    )
    assert_problem(response, 403)
    denied = embedded.audit(AuditRecord.outcome == "4")
    assert len(denied) == before + 1
    assert denied[-1].agent_user == "admin-1"
    assert denied[-1].agent_role == "admin"
    assert denied[-1].detail == "HTTP 403"


def test_a_successful_create_is_audited_as_success(embedded: Embedded) -> None:
    patient_id = register(embedded)
    rows = embedded.audit(AuditRecord.patient_id == UUID(patient_id))
    assert [(row.action, row.outcome, row.entity_type) for row in rows] == [("C", "0", "Patient")]
    assert rows[0].agent_role == "referrer"


# --- the pathway, end to end in one process -----------------------------------------------


def wait_for_pathway(embedded: Embedded, patient_id: str, stage: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    last: Any = None
    while time.monotonic() < deadline:
        response = embedded.client.get(
            f"/api/pathways/{patient_id}", headers=embedded.headers(Role.mdt)
        )
        if response.status_code == 200:
            last = response.json()
            if last["stage"] == stage:
                return dict(last)
        time.sleep(0.05)
    raise AssertionError(f"pathway never reached {stage}: {last}")


def test_a_referral_reaches_the_coordinators_pathway(embedded: Embedded) -> None:
    patient_id = register(embedded)
    response = embedded.client.post(
        "/api/referrals",
        json=referral_body(
            patient_id, baseline={"phq9_items": [1, 1, 1, 1, 1, 1, 1, 1, 2], "pain_nrs": 7}
        ),
        headers=embedded.headers(Role.referrer),
    )
    assert response.status_code == 201, response.text

    pathway = wait_for_pathway(embedded, patient_id, "referred")
    types = [entry["type"] for entry in pathway["timeline"]]
    assert "referral.received" in types
    assert types.index("patient.registered") < types.index("referral.received")
    assert [alert["kind"] for alert in pathway["alerts"]] == ["phq9-item9"]
    assert pathway["streams"]["referrals"][0]["id"] == response.json()["id"]

    # The shape the coordinator issue's contract names.
    streams = pathway["streams"]
    assert {"id", "target", "status"} <= set(streams["referrals"][0])
    assert streams["infusion_course"] is None and streams["therapy_episode"] is None
    assert set(pathway["measures"]) == {
        "phq9",
        "gad7",
        "pain_nrs",
        "peg",
        "opioid_mme",
        "pain_after_infusion",
        "phq9_after_infusion",
    }
    assert [(p["score"], "at" in p) for p in pathway["measures"]["phq9"]] == [(10, True)]
    # Triage by the receiving team, and an MDT review for the item-9 alert the MDT owns.
    actions = pathway["next_actions"]
    assert all({"action", "owner_role", "due"} <= set(action) for action in actions)
    assert sorted(action["owner_role"] for action in actions) == ["infusion-clinician", "mdt"]
    (alert,) = pathway["alerts"]
    assert {"id", "kind", "severity", "status", "reason"} <= set(alert)
    assert (alert["severity"], alert["status"]) == ("urgent", "open")
    again = embedded.client.get(f"/api/pathways/{patient_id}", headers=embedded.headers(Role.mdt))
    assert again.json()["alerts"][0]["id"] == alert["id"]  # ids are stable


def test_unknown_patient_pathway_is_a_404(embedded: Embedded) -> None:
    response = embedded.client.get(f"/api/pathways/{uuid4()}", headers=embedded.headers(Role.mdt))
    assert_problem(response, 404)


def test_a_referrer_may_not_read_pathways(embedded: Embedded) -> None:
    response = embedded.client.get(
        f"/api/pathways/{uuid4()}", headers=embedded.headers(Role.referrer)
    )
    assert_problem(response, 403)


# --- platform routes ----------------------------------------------------------------------


def test_health_is_public(embedded: Embedded) -> None:
    response = embedded.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_reports_every_database_and_the_broker(embedded: Embedded) -> None:
    response = embedded.client.get("/ready")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks == {
        "referrals.database": "ok",
        "infusions.database": "ok",
        "therapy.database": "ok",
        "coordinator.database": "ok",
        "broker": "ok",
        "referrals.feeds": "ok",
        "infusions.feeds": "ok",
        "therapy.feeds": "ok",
        "coordinator.feeds": "ok",
    }


def test_the_event_feed_lists_the_outbox_in_order(embedded: Embedded) -> None:
    patient_id = register(embedded)
    embedded.client.post(
        "/api/referrals", json=referral_body(patient_id), headers=embedded.headers(Role.referrer)
    )
    response = embedded.client.get(
        "/referrals/api/events", params={"limit": 1000}, headers=embedded.headers(Role.service)
    )
    assert response.status_code == 200, response.text
    page = response.json()
    positions = [item["position"] for item in page["items"]]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert page["next_after"] == f"0.{positions[-1]}"  # SQLite: txid 0, commit order
    assert page["remaining"] == 0
    assert len(positions) == embedded.count("referrals", OutboxEvent)
    mine = [item["type"] for item in page["items"] if item["patient_id"] == patient_id]
    assert mine == ["patient.registered", "referral.received"]

    after = embedded.client.get(
        "/referrals/api/events",
        params={"after": positions[-2], "limit": 5},
        headers=embedded.headers(Role.service),
    ).json()
    assert [item["position"] for item in after["items"]] == [positions[-1]]
    only = embedded.client.get(
        "/referrals/api/events",
        params={"type": ["referral.received"]},
        headers=embedded.headers(Role.service),
    ).json()
    assert {item["type"] for item in only["items"]} == {"referral.received"}


def test_a_malformed_feed_cursor_is_a_problem_naming_it(embedded: Embedded) -> None:
    response = embedded.client.get(
        "/referrals/api/events", params={"after": "1.2.3"}, headers=embedded.headers(Role.service)
    )
    assert_problem(response, 422, field="after")


def test_the_event_feed_needs_the_service_or_admin_role(embedded: Embedded) -> None:
    response = embedded.client.get("/referrals/api/events", headers=embedded.headers(Role.mdt))
    assert_problem(response, 403)


def test_metrics_expose_events_published(embedded: Embedded) -> None:
    register(embedded)
    deadline = time.monotonic() + 5
    text = ""
    while time.monotonic() < deadline:
        text = embedded.client.get("/metrics").text
        if 'carepath_events_published_total{service="referrals"' in text:
            break
        time.sleep(0.05)
    assert 'carepath_events_published_total{service="referrals",type="patient.registered"}' in text


# --- more input and token edges ------------------------------------------------------------


def test_a_missing_required_field_is_a_422_whose_message_names_it(embedded: Embedded) -> None:
    body = patient_body()
    del body["family_name"]
    response = embedded.client.post(
        "/api/patients", json=body, headers=embedded.headers(Role.referrer)
    )
    problem = assert_problem(response, 422)
    assert "family_name" in problem["errors"][0]["message"]


def test_a_missing_required_field_is_named_in_errors_field(embedded: Embedded) -> None:
    body = patient_body()
    del body["family_name"]
    response = embedded.client.post(
        "/api/patients", json=body, headers=embedded.headers(Role.referrer)
    )
    assert_problem(response, 422, "family_name")


def test_a_missing_nested_field_is_named_with_its_path(embedded: Embedded) -> None:
    patient_id = register(embedded)
    body = referral_body(patient_id, referrer={"name": "Dr Ref", "role": "GP"})
    response = embedded.client.post(
        "/api/referrals", json=body, headers=embedded.headers(Role.referrer)
    )
    assert_problem(response, 422, "referrer.organisation")


def test_an_expired_token_is_a_401(embedded: Embedded) -> None:
    expired = jwt.encode(
        {
            "sub": "dr-late",
            "exp": int(time.time()) - 60,
            "iat": int(time.time()) - 120,
            "role": "mdt",
        },
        SECRET,
        algorithm="HS256",
    )
    response = embedded.client.get(
        f"/api/patients/{uuid4()}", headers={"Authorization": f"Bearer {expired}"}
    )
    assert_problem(response, 401)


def test_a_token_with_an_unknown_role_is_a_401(embedded: Embedded) -> None:
    odd = jwt.encode(
        {"sub": "x", "exp": int(time.time()) + 600, "iat": int(time.time()), "role": "root"},
        SECRET,
        algorithm="HS256",
    )
    response = embedded.client.get(
        f"/api/patients/{uuid4()}", headers={"Authorization": f"Bearer {odd}"}
    )
    assert_problem(response, 401)


def test_the_correlation_id_is_echoed_and_carried_into_problems_and_events(
    embedded: Embedded,
) -> None:
    headers = {**embedded.headers(Role.referrer), "X-Correlation-ID": "unit-corr-42"}
    bad = embedded.client.post("/api/patients", json=patient_body(sex="robot"), headers=headers)
    assert bad.headers["x-correlation-id"] == "unit-corr-42"
    assert bad.json()["correlation_id"] == "unit-corr-42"

    good = embedded.client.post("/api/patients", json=patient_body(), headers=headers)
    assert good.status_code == 201
    patient_id = good.json()["id"]
    feed = embedded.client.get(
        "/referrals/api/events", params={"limit": 1000}, headers=embedded.headers(Role.service)
    ).json()
    (event,) = [item for item in feed["items"] if item["patient_id"] == patient_id]
    assert event["correlation_id"] == "unit-corr-42"


def test_an_unsafe_correlation_id_is_replaced(embedded: Embedded) -> None:
    response = embedded.client.get("/health", headers={"X-Correlation-ID": "bad id;drop"})
    echoed = response.headers["x-correlation-id"]
    assert echoed != "bad id;drop"
    assert echoed.isalnum()


def test_the_pathway_list_filters_and_pages_and_the_alert_list_ranks(embedded: Embedded) -> None:
    """The status list admins and the MDT work from: no names, filters, cursor pages."""
    mdt = embedded.headers(Role.mdt)
    at_risk = register(embedded)
    embedded.client.post(
        "/api/referrals",
        json=referral_body(
            at_risk,
            target="psychology",
            prior_treatments=[],
            baseline={"phq9_items": [1, 1, 1, 1, 1, 1, 1, 1, 3]},
        ),
        headers=embedded.headers(Role.referrer),
    )
    calm = register(embedded)
    embedded.client.post(
        "/api/referrals", json=referral_body(calm), headers=embedded.headers(Role.referrer)
    )
    wait_for_pathway(embedded, at_risk, "referred")
    wait_for_pathway(embedded, calm, "referred")

    def patients(**query: Any) -> list[str]:
        response = embedded.client.get("/api/pathways", params=query, headers=mdt)
        assert response.status_code == 200, response.text
        return [item["patient_id"] for item in response.json()["items"]]

    urgent = patients(alert_kind="phq9-item9", severity="urgent", limit=200)
    assert at_risk in urgent and calm not in urgent
    psychology = patients(team="psychology", limit=200)
    assert at_risk in psychology and calm not in psychology
    assert calm in patients(team="ketamine-infusion", stage="referred", limit=200)
    assert calm not in patients(waiting_over_days=1, limit=200)

    walked: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = embedded.client.get("/api/pathways", params=params, headers=mdt).json()
        walked += [item["patient_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(walked) == len(set(walked)) == len(patients(limit=200))
    row = next(
        i
        for i in embedded.client.get("/api/pathways", params={"limit": 200}, headers=mdt).json()[
            "items"
        ]
        if i["patient_id"] == at_risk
    )
    assert row["alerts_by_severity"] == {"urgent": 1} and "given_name" not in str(row)

    alerts = embedded.client.get(
        "/api/alerts",
        params={"severity": "urgent", "limit": 200},
        headers=embedded.headers(Role.admin),
    ).json()["items"]
    pathway = embedded.client.get(f"/api/pathways/{at_risk}", headers=mdt).json()
    assert pathway["alerts"][0]["id"] in {alert["id"] for alert in alerts}

    for query, field in (
        ({"stage": "nowhere"}, "stage"),
        ({"cursor": "bm9wZQ"}, "cursor"),
        ({"limit": 201}, "limit"),
    ):
        assert_problem(embedded.client.get("/api/pathways", params=query, headers=mdt), 422, field)
    assert_problem(
        embedded.client.get("/api/pathways", headers=embedded.headers(Role.referrer)), 403
    )


def test_alerts_are_acknowledged_then_resolved_by_people_and_survive_a_rebuild(
    embedded: Embedded,
) -> None:
    from services.coordinator.handlers import rebuild_pathways
    from services.coordinator.models import AlertAction

    patient_id = register(embedded)
    embedded.client.post(
        "/api/referrals",
        json=referral_body(patient_id, baseline={"phq9_items": [0, 0, 0, 0, 0, 0, 0, 0, 1]}),
        headers=embedded.headers(Role.referrer),
    )
    pathway = wait_for_pathway(embedded, patient_id, "referred")
    (alert,) = pathway["alerts"]
    path = f"/api/alerts/{alert['id']}"
    mdt = embedded.headers(Role.mdt, "dr-mdt")

    assert_problem(
        embedded.client.post(f"{path}/acknowledge", json={}, headers=embedded.headers(Role.admin)),
        403,
    )
    seen = embedded.client.post(f"{path}/acknowledge", json={"note": "calling today"}, headers=mdt)
    assert seen.status_code == 200, seen.text
    assert seen.json()["status"] == "acknowledged"
    assert_problem(embedded.client.post(f"{path}/acknowledge", json={}, headers=mdt), 409)
    now = embedded.client.get(f"/api/pathways/{patient_id}", headers=mdt).json()
    assert now["alerts"][0]["status"] == "acknowledged"

    done = embedded.client.post(f"{path}/resolve", json={"note": "safety plan agreed"}, headers=mdt)
    assert done.json()["status"] == "resolved"
    open_ids = {
        a["id"]
        for a in embedded.client.get("/api/alerts", params={"limit": 200}, headers=mdt).json()[
            "items"
        ]
    }
    assert alert["id"] not in open_ids
    assert_problem(embedded.client.get("/api/alerts/nope/resolve", headers=mdt), 405)
    assert_problem(embedded.client.post("/api/alerts/nope/resolve", json={}, headers=mdt), 404)

    # The note stays in the coordinator; the events are in its store, so a rebuild agrees.
    assert embedded.count("coordinator", AlertAction, AlertAction.alert_id == alert["id"]) == 2
    time.sleep(0.5)  # the copies coming back through the queue are duplicates
    with embedded.runtime("coordinator").sessions() as session:
        assert rebuild_pathways(session, repair=False) == []
    again = embedded.client.get(f"/api/pathways/{patient_id}", headers=mdt).json()
    assert again["alerts"][0]["status"] == "resolved"
