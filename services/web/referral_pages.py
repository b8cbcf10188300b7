"""The referrer's work in the browser (issue 13): find the patient (trace by NHS number,
birth date and family name, or register them), write a referral with its prior
treatments and baseline PHQ-9 and pain, follow my referrals' status and answer the
receiving team's question.

Everything goes through the referrals API as the signed-in referrer, each form's key as
the Idempotency-Key, so the referrals service checks, refuses in its words and audits.
"""

from __future__ import annotations

from typing import Any, get_args
from uuid import UUID

import httpx
from litestar import Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from services.web.pages import FormData, _back, _flash, _page, _Pages, api_write, form_write
from shared.auth import Role, requires
from shared.client import ApiProblem
from shared.events.catalogue import Condition, ReferralTarget
from shared.web import service_client

CONDITIONS = list(get_args(Condition))
TARGETS = list(get_args(ReferralTarget))
PRIOR_TREATMENT_ROWS = 4
PHQ9_ITEMS = range(1, 10)
NEW = "/referrals/new"


class ReferralPagesController(_Pages):
    path = "/referrals"
    guards = [requires(Role.referrer, Role.mdt)]

    @get("/mine")
    async def mine(self, request: Request[Any, Any, Any]) -> Template:
        async with service_client(request, "referrals") as referrals:
            page = await referrals.get("/api/referrals", limit=100)
            items = page["items"]
            asked = [r for r in items if r["status"] == "info-requested"]
            for referral in asked:  # the question is in the referral's history
                detail = await referrals.get(f"/api/referrals/{referral['id']}")
                questions = [
                    t.get("note")
                    for t in detail.get("history") or []
                    if t["action"] == "request-info"
                ]
                referral["question"] = questions[-1] if questions else None
        return _page(request, "my_referrals.html", referrals=items, **_flash(request))

    @get("/new")
    async def new(
        self, request: Request[Any, Any, Any], patient_id: FromQuery[UUID | None] = None
    ) -> Template:
        patient = None
        if patient_id is not None:
            try:
                async with service_client(request, "referrals") as referrals:
                    patient = await referrals.get(f"/api/patients/{patient_id}")
            except ApiProblem as refused:
                if refused.status not in (403, 404):
                    raise
        return _page(
            request,
            "new_referral.html",
            patient=patient,
            targets=TARGETS,
            conditions=CONDITIONS,
            prior_rows=range(1, PRIOR_TREATMENT_ROWS + 1),
            phq9_items=PHQ9_ITEMS,
            **_flash(request),
        )

    @post("/trace")
    async def trace(self, request: Request[Any, Any, Any], data: FormData) -> Redirect:
        """PDS-style: the NHS number with a matching birth date and family name."""
        body = {
            "nhs_number": (data.get("nhs_number") or "").replace(" ", ""),
            "birth_date": data.get("birth_date", ""),
            "family_name": (data.get("family_name") or "").strip(),
        }
        try:
            async with service_client(request, "referrals") as referrals:
                traced = await referrals.post("/api/patients/trace", body)
        except ApiProblem as refused:
            if refused.status == 404:
                return _back(NEW, error="No registered patient matches these details.")
            return _back(NEW, error=f"Not traced: {refused.body.get('detail', '')}")
        except httpx.HTTPError:
            return _back(NEW, error="The referrals service did not answer; try again.")
        return Redirect(path=f"{NEW}?patient_id={traced['id']}", status_code=303)

    @post("/patients")
    async def register(self, request: Request[Any, Any, Any], data: FormData) -> Redirect:
        body = {
            "given_name": (data.get("given_name") or "").strip(),
            "family_name": (data.get("family_name") or "").strip(),
            "birth_date": data.get("birth_date", ""),
            "sex": data.get("sex", ""),
            "nhs_number": (data.get("nhs_number") or "").replace(" ", "") or None,
        }
        created, refused = await api_write(
            request, "referrals", "POST", "/api/patients", body, data
        )
        if refused:
            return _back(NEW, error=f"Not registered: {refused}")
        return Redirect(path=f"{NEW}?patient_id={created['id']}", status_code=303)

    @post("/new")
    async def refer(self, request: Request[Any, Any, Any], data: FormData) -> Redirect:
        patient_id = data.get("patient_id", "")
        back = f"{NEW}?patient_id={patient_id}" if patient_id else NEW
        _, refused = await api_write(
            request, "referrals", "POST", "/api/referrals", _referral_body(data), data
        )
        if refused:
            return _back(back, error=f"Not referred: {refused}")
        return _back("/referrals/mine", done="Referral sent.")

    @post("/{referral_id:uuid}/answer")
    async def answer(
        self, request: Request[Any, Any, Any], referral_id: FromPath[UUID], data: FormData
    ) -> Redirect:
        body = {"answer": (data.get("answer") or "").strip()}
        path = f"/api/referrals/{referral_id}/info"
        return await form_write(
            request,
            "referrals",
            path,
            body,
            data,
            back="/referrals/mine",
            failed="Not answered",
            done="Answer sent: the referral is back with the team.",
        )


def _referral_body(data: dict[str, str]) -> dict[str, Any]:
    """The referral as the API takes it; what the form left empty is left out, so the
    referrals service names what a referral still needs."""
    prior = [
        {"name": name, "kind": data.get(f"prior-{n}-kind") or "medicine"}
        | (
            {"outcome": outcome}
            if (outcome := (data.get(f"prior-{n}-outcome") or "").strip())
            else {}
        )
        for n in range(1, PRIOR_TREATMENT_ROWS + 1)
        if (name := (data.get(f"prior-{n}-name") or "").strip())
    ]
    items = [data.get(f"phq9-{n}") or "" for n in PHQ9_ITEMS]
    baseline: dict[str, Any] = {}
    if any(items):
        baseline["phq9_items"] = [int(i) if i.isdigit() else i for i in items]
    pain = (data.get("pain_nrs") or "").strip()
    if pain:
        baseline["pain_nrs"] = int(pain) if pain.isdigit() else pain
    return {
        "patient_id": data.get("patient_id", ""),
        "target": data.get("target", ""),
        "priority": data.get("priority", "routine"),
        "reason": (data.get("reason") or "").strip(),
        "conditions": [c for c in CONDITIONS if data.get(f"condition-{c}")],
        "referrer": {
            "name": (data.get("referrer_name") or "").strip(),
            "role": (data.get("referrer_role") or "").strip(),
            "organisation": (data.get("referrer_organisation") or "").strip(),
        },
        "prior_treatments": prior,
        **({"baseline": baseline} if baseline else {}),
    }


REFERRAL_PAGES = (ReferralPagesController,)
