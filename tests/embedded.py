"""The embedded app as a test harness: every service in one app on a temporary data
folder (SQLite files, the in-process broker, HTTP without a socket). The ``embedded``
fixture (tests/conftest.py) gives each test module its own; the tests that drive it
live in tests/integration/embedded, and a few unit modules use it for one HTTP check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import TestClient
from sqlmodel import col, func, select

from services.registry import all_specs
from services.web.app import WEB
from shared.auth import Role, issue_token
from shared.messaging import InProcessWorkers, make_broker
from shared.runtime import ServiceRuntime
from shared.settings import BrokerKind, PlatformSettings, RunMode, load_service_settings
from shared.tables import AuditRecord
from shared.web import build_app

SECRET = "unit-test-secret-that-is-long-enough-0123456789"
VALID_NHS = ["9434765919", "4010232137", "4505577104"]


@dataclass
class Embedded:
    client: TestClient[Litestar]
    app: Litestar
    platform: PlatformSettings

    def runtime(self, name: str) -> ServiceRuntime:
        runtimes: dict[str, ServiceRuntime] = self.app.state.runtimes
        return runtimes[name]

    def headers(self, role: Role, user: str = "unit-user") -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self.platform, user, role)}"}

    def count(self, service: str, model: Any, *where: Any) -> int:
        with self.runtime(service).sessions() as session:
            return int(session.exec(select(func.count()).select_from(model).where(*where)).one())

    def audit(self, *where: Any, service: str = "referrals") -> list[AuditRecord]:
        with self.runtime(service).sessions() as session:
            statement = select(AuditRecord).where(*where).order_by(col(AuditRecord.id))
            return list(session.exec(statement).all())


@contextmanager
def embedded_app(data_dir: Path, **settings: Any) -> Iterator[Embedded]:
    platform = PlatformSettings(
        env=RunMode.development,
        jwt_secret=SECRET,
        broker=BrokerKind.memory,
        data_dir=data_dir,
        relay_interval_s=0.05,
        **{"sign_in_per_minute": 10_000, **settings},  # one test address signs in often
    )
    broker = make_broker(platform)
    runtimes = [
        # environ={}: a CAREPATH_*_DATABASE_URL in the shell must not point this at a server.
        ServiceRuntime(spec, load_service_settings(spec.name, platform, {}), broker)
        for spec in all_specs()
    ]
    app = build_app(
        runtimes,
        broker,
        platform,
        embedded=True,
        migrate_on_start=True,
        workers=InProcessWorkers(broker, 2),
        web=WEB,
    )
    with TestClient(app) as client:
        yield Embedded(client=client, app=app, platform=platform)


def patient_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "given_name": "Ada",
        "family_name": "Example",
        "birth_date": "1971-02-03",
        "sex": "female",
    }
    body.update(overrides)
    return body


def referral_body(patient_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "patient_id": patient_id,
        "target": "ketamine-infusion",
        "priority": "routine",
        "reason": "CRPS of the right hand with low mood despite treatment",
        "conditions": ["crps", "depression"],
        "referrer": {"name": "Dr Ref", "role": "pain consultant", "organisation": "Unit Trust"},
        "prior_treatments": [{"name": "pregabalin", "kind": "medicine", "outcome": "none"}],
        "baseline": {"phq9_items": [2, 2, 1, 1, 2, 1, 1, 1, 0], "pain_nrs": 8},
    }
    body.update(overrides)
    return body


def register(embedded: Embedded, **overrides: Any) -> str:
    response = embedded.client.post(
        "/api/patients", json=patient_body(**overrides), headers=embedded.headers(Role.referrer)
    )
    assert response.status_code == 201, response.text
    patient_id: str = response.json()["id"]
    return patient_id


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert body["errors"][0]["field"] == field, body
    return body


# --- an infusion course's assessment and plan, as the clinic fills them in -------------

CHECKLIST_ITEMS = (
    "uncontrolled-cardiovascular-disease",
    "psychosis",
    "severe-hepatic-impairment",
    "raised-intracranial-or-intraocular-pressure",
    "pregnancy",
    "active-substance-misuse",
    "moderate-hepatic-impairment",
    "controlled-hypertension",
    "history-of-substance-misuse",
)
BASELINE_PHQ9 = [2, 2, 2, 2, 2, 2, 1, 1, 0]  # 14


def checklist(*present: str) -> dict[str, dict[str, Any]]:
    return {item: {"present": item in present, "note": ""} for item in CHECKLIST_ITEMS}


def assessment_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "weight_kg": 70,
        "systolic": 130,
        "diastolic": 80,
        "heart_rate": 70,
        "opioid_mme_per_day": 40,
        "pain_nrs": 8,
        "phq9_items": BASELINE_PHQ9,
        "prior_treatments": [{"name": "pregabalin", "kind": "medicine"}],
        "checklist": checklist(),
    }
    body.update(overrides)
    return body


def plan_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "indication": "pain",
        "weight_kg": 70,
        "rate_mg_per_kg_per_h": 0.3,
        "duration_hours": 4,  # 0.3 x 70 x 4 = 84 mg
        "induction_count": 2,
        "induction_spacing_days": 3,
        "maintenance_interval_days": 28,
    }
    body.update(overrides)
    return body
