"""Idempotency keys on a real PostgreSQL (issue 16): two requests with one key at once
make one change and get one answer; the second waits on the first's claim and then
gets its answer, or, if the first rolled back, runs itself."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlmodel import func, select

from services.referrals.models import Referral
from shared import idempotency
from shared.idempotency import StoredAnswer
from shared.runtime import ServiceRuntime
from shared.tables import IdempotencyKey
from tests.integration.conftest import Stack
from tests.support import patient_body, referral_body, token

pytestmark = pytest.mark.integration

OpenClient = Callable[[Litestar], TestClient[Litestar]]


def headers(key: str, user: str = "gp-1") -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token('referrer', user)}",
        "Idempotency-Key": key,
        "Content-Type": "application/json",
    }


def referrals_count(runtime: ServiceRuntime) -> int:
    with runtime.sessions() as session:
        return int(session.exec(select(func.count()).select_from(Referral)).one())


def registered(client: TestClient[Litestar]) -> str:
    response = client.post("/api/patients", json=patient_body(), headers=headers(str(uuid4())))
    assert response.status_code == 201, response.text
    patient_id: str = response.json()["id"]
    return patient_id


def at_once(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """Run the calls on threads released together; their responses in call order."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], httpx.Response]) -> None:
        start.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_two_requests_with_one_key_at_once_make_one_referral(
    stack: Stack, api_client: OpenClient
) -> None:
    app = stack.api("referrals")
    client = api_client(app)
    runtime: ServiceRuntime = app.state.runtimes["referrals"]
    rounds = 6
    for _ in range(rounds):
        patient_id = registered(client)
        body = json.dumps(referral_body(patient_id)).encode()
        key = str(uuid4())

        def send(body: bytes = body, key: str = key) -> httpx.Response:
            return client.post("/api/referrals", content=body, headers=headers(key))

        first, second = at_once(send, send)
        assert first.status_code == second.status_code == 201, (first.text, second.text)
        assert first.content == second.content
        replayed = [r.headers.get("Idempotent-Replayed") for r in (first, second)]
        assert replayed.count("true") == 1
    assert referrals_count(runtime) == rounds


def _request_for(body: bytes, key: str) -> idempotency.IdempotentRequest:
    return idempotency.idempotent_request(
        key, user_id="gp-1", role="referrer", method="POST", path="/api/referrals", body=body
    )


def _waiting_request(client: TestClient[Litestar], body: bytes, key: str) -> Any:
    """Send the request on a thread; it must still be waiting half a second later."""
    answer: dict[str, httpx.Response] = {}
    thread = threading.Thread(
        target=lambda: answer.setdefault(
            "response", client.post("/api/referrals", content=body, headers=headers(key))
        )
    )
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), "the second request did not wait for the first's claim"
    return thread, answer


def test_the_second_request_waits_for_the_first_and_gets_its_answer(
    stack: Stack, api_client: OpenClient
) -> None:
    app = stack.api("referrals")
    client = api_client(app)
    runtime: ServiceRuntime = app.state.runtimes["referrals"]
    body = json.dumps(referral_body(registered(client))).encode()
    key = str(uuid4())
    with runtime.sessions() as first:
        claimed = idempotency.claim(first, _request_for(body, key))
        assert isinstance(claimed, IdempotencyKey)
        thread, answer = _waiting_request(client, body, key)
        stored = StoredAnswer(status=201, media_type="application/json", body=b'{"first":1}')
        idempotency.keep(first, claimed, stored)
    thread.join(30)
    response = answer["response"]
    assert (response.status_code, response.content) == (201, b'{"first":1}')
    assert response.headers["Idempotent-Replayed"] == "true"
    assert referrals_count(runtime) == 0  # the first "request" here made no referral


def test_when_the_first_rolls_back_the_waiting_request_runs(
    stack: Stack, api_client: OpenClient
) -> None:
    app = stack.api("referrals")
    client = api_client(app)
    runtime: ServiceRuntime = app.state.runtimes["referrals"]
    body = json.dumps(referral_body(registered(client))).encode()
    key = str(uuid4())
    with runtime.sessions() as first:
        claimed = idempotency.claim(first, _request_for(body, key))
        assert isinstance(claimed, IdempotencyKey)
        thread, answer = _waiting_request(client, body, key)
        idempotency.abandon(first)
    thread.join(30)
    response = answer["response"]
    assert response.status_code == 201, response.text
    assert "Idempotent-Replayed" not in response.headers
    assert referrals_count(runtime) == 1


def test_the_service_schema_documents_the_key_on_its_commands(
    stack: Stack, api_client: OpenClient
) -> None:
    client = api_client(stack.api("referrals"))
    schema = client.get("/schema/openapi.json").json()

    def header_names(path: str, method: str = "post") -> set[str]:
        parameters = schema["paths"][path][method].get("parameters", [])
        return {p["name"] for p in parameters if p["in"] == "header"}

    assert "Idempotency-Key" in header_names("/api/referrals")
    assert "Idempotency-Key" in header_names("/api/dead-letters/{dead_letter_id}/replay")
    assert "Idempotency-Key" not in header_names("/api/feeds/reconcile")
