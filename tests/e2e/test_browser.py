"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright,
against `carepath up --demo` started as a subprocess.

Screenshots of the status page and a patient's pathway are written to docs/screenshots/
(the README shows them).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from oidc_provider_mock import run_server_in_thread
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.support import (
    JWT_SECRET,
    carepath,
    free_port,
    patient_body,
    referral_body,
    token,
    wait_for_http,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

CHROMIUM = os.environ.get("CAREPATH_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SHORT_ID = re.compile(r"^[0-9a-f]{8}$")


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """The clinic's OpenID Connect provider: oidc-provider-mock, a real one, in a thread."""
    with run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory, provider: str) -> Iterator[str]:
    """`carepath up --demo` on a fresh data folder, once for the module."""
    workdir = tmp_path_factory.mktemp("browser")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAREPATH_")}
    env["CAREPATH_JWT_SECRET"] = JWT_SECRET
    env["CAREPATH_OIDC_ISSUER"] = provider
    env["CAREPATH_OIDC_CLIENT_SECRET"] = "carepath-web-secret"
    env["CAREPATH_SIGN_IN_PER_MINUTE"] = "10000"  # every role signs in from one address
    port = free_port()
    log = (workdir / "up.log").open("wb")
    process = subprocess.Popen(
        carepath("up", "--demo", "--port", str(port), "--data-dir", str(workdir / "data")),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health")
        admin = {"Authorization": f"Bearer {token('admin')}"}
        wait_until(
            lambda: (
                len(httpx.get(f"{base}/api/pathways?limit=200", headers=admin).json()["items"])
                >= 45
            ),
            timeout=120,
            interval=1,
            what="the demo cohort",
        )
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (Debian's chromium package; .ci/run installs it)"
        if os.environ.get("CAREPATH_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Page, base: str, user: str, role: str) -> None:
    page.goto(f"{base}/status")
    expect(page).to_have_url(f"{base}/sign-in")  # no session yet: the sign-in page
    page.get_by_label("User").fill(user)
    page.get_by_label("Role").select_option(role)
    with page.expect_navigation():  # the form posts, then lands on the role's page
        page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_load_state("load")


def first_cells(page: Page) -> list[str]:
    return [
        cell.strip() for cell in page.locator("#pathway-rows tr td:first-child").all_inner_texts()
    ]


def test_an_admin_sees_every_pathway_without_names(clinic: str, page: Page) -> None:
    sign_in(page, clinic, "admin-kim", "admin")
    expect(page).to_have_url(f"{clinic}/status")
    expect(page.get_by_role("heading", name="Pathway status")).to_be_visible()
    patients = int(page.locator("#count-patients").inner_text())
    assert patients >= 45
    cells = first_cells(page)
    # Paged on the server (issue 13): the first page, the figures for everyone.
    assert len(cells) == min(patients, 50) and all(SHORT_ID.match(cell) for cell in cells)
    assert page.locator("#pathway-rows a").count() == 0  # no way into a patient's record
    page.get_by_label("Breached waits only").check()
    page.get_by_label("Stage").select_option("referred")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"stage=referred"))
    assert all(
        stage == "referred" for stage in page.locator("#pathway-rows .stage").all_inner_texts()
    )
    page.goto(f"{clinic}/operations")
    expect(page.get_by_role("heading", name="Operations")).to_be_visible()
    expect(page.locator(".health-ready")).to_have_count(4)


def test_the_status_page_updates_live_when_an_event_arrives(clinic: str, page: Page) -> None:
    sign_in(page, clinic, "admin-kim", "admin")
    page.goto(f"{clinic}/status?stage=referred")  # one page: the new referral joins it
    before = len(first_cells(page))
    counted = int(page.locator("#count-patients").inner_text())
    with httpx.Client(
        base_url=clinic, headers={"Authorization": f"Bearer {token('referrer')}"}
    ) as api:
        patient = api.post("/api/patients", json=patient_body()).json()["id"]
        api.post("/api/referrals", json=referral_body(patient, target="psychology"))
    # No reload: the stream of pathway changes brings the new row in.
    expect(page.locator(f"#p-{patient}")).to_be_visible(timeout=20_000)
    assert len(first_cells(page)) == before + 1
    expect(page.locator("#count-patients")).to_have_text(str(counted + 1))  # figures follow
    expect(page.locator("#live-note")).to_contain_text("Updated")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "status.png"), full_page=False)


def test_the_mdt_sees_names_opens_a_pathway_and_acknowledges_an_alert(
    clinic: str, page: Page
) -> None:
    sign_in(page, clinic, "dr-mdt-lead", "mdt")
    page.get_by_label("Open alert").select_option("phq9-item9")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"alert_kind=phq9-item9"))
    links = page.locator("#pathway-rows a")
    assert links.count() >= 1
    name = links.first.inner_text().strip()
    assert not SHORT_ID.match(name) and " " in name  # a name, from the referrals service
    links.first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    expect(page.locator("svg.chart")).to_have_count(6)  # the trajectory, then each measure
    expect(page.locator("svg.chart .threshold").first).to_be_attached()
    alert = page.locator("article.alert", has_text="phq9-item9").first
    alert.get_by_label("Note").fill("Phoned the patient; crisis plan reviewed.")
    alert.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status").filter(has_text="Alert acknowledged.")).to_be_visible()
    expect(page.locator("article.alert", has_text="phq9-item9").first).to_contain_text(
        "acknowledged"
    )
    # The picture for the README: a patient well into an infusion course.
    page.goto(f"{clinic}/status?alert_kind=no-response")
    page.locator("#pathway-rows a").first.click()
    expect(page.locator("svg.chart .series").first).to_be_attached()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "pathway.png"), full_page=True)


def test_a_psychologist_triages_a_referral_from_the_inbox(clinic: str, page: Page) -> None:
    sign_in(page, clinic, "psy-jones", "psychologist")
    expect(page).to_have_url(f"{clinic}/inbox")
    referral = page.locator("article.referral").first
    referral_id = (referral.get_attribute("id") or "").removeprefix("referral-")
    assert referral_id
    referral.get_by_label("Accept").check()
    # The form sent twice (issue 16: a double click, a resubmitted page, a retry on a slow
    # connection): the browser's request goes out once more before it is let through. The
    # form's key makes one triage, and the person sees the first answer, not "already
    # accepted".
    sent: list[int] = []

    def twice(route: Route) -> None:
        sent.append(route.fetch(max_redirects=0).status)  # the same form, sent again
        route.continue_()

    page.route(f"**/inbox/{referral_id}/triage", twice)
    referral.get_by_role("button", name="Record triage").click()
    expect(page.get_by_role("status").filter(has_text="Referral accepted.")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.locator(f"#referral-{referral_id}")).to_have_count(0)
    assert sent == [303]
    with httpx.Client(base_url=clinic, headers={"Authorization": f"Bearer {token('mdt')}"}) as api:
        read = api.get(f"/api/referrals/{referral_id}").json()
    assert read["status"] == "accepted"
    assert [t["action"] for t in read["history"]].count("accept") == 1
    # Not this role's pages.
    page.goto(f"{clinic}/operations")
    expect(page.get_by_role("heading", name="Not for this role")).to_be_visible()


def test_an_infusion_clinician_sees_the_clinic_and_not_the_status_page(
    clinic: str, page: Page
) -> None:
    sign_in(page, clinic, "nurse-okafor", "infusion-clinician")
    expect(page).to_have_url(f"{clinic}/clinic")
    expect(page.get_by_role("heading", name="Active courses", exact=False)).to_be_visible()
    page.goto(f"{clinic}/status")
    expect(page.get_by_role("heading", name="Not for this role")).to_be_visible()


def test_pages_work_by_keyboard_and_at_phone_width(clinic: str, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in(page, clinic, "dr-mdt-lead", "mdt")
        expect(page.get_by_role("heading", name="Pathway status")).to_be_visible()
        page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to content")
        expect(skip).to_be_focused()
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"the page is {wide}px wide at phone width"
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
               .filter(el => !(el.labels && el.labels.length)).length"""
        )
        assert unlabelled == 0
    finally:
        context.close()


def test_a_clinician_signs_in_through_the_clinics_identity_provider(
    clinic: str, provider: str, page: Page
) -> None:
    """Production's sign-in, in the browser: carepath sends the person to the provider,
    they sign in there, and come back signed in with the role their account names."""
    account = {"carepath_role": "mdt", "preferred_username": "dr-oidc-lead"}
    httpx.put(f"{provider}/users/oidc-7781", json=account).raise_for_status()
    page.goto(f"{clinic}/sign-in")
    page.get_by_role("link", name="Sign in with your clinic account").click()
    page.wait_for_url(f"{provider}/oauth2/authorize*")
    page.fill("input[name=sub]", "oidc-7781")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{clinic}/status*")  # the callback's page moves on from our site
    assert "dr-oidc-lead" in page.content()


# Each role's pages, as that role sees them on the demo clinic.
PAGES_OF_ROLE = {
    ("admin-kim", "admin"): ["/status", "/reports/waits", "/operations"],
    ("dr-mdt-lead", "mdt"): ["/status", "/worklist", "/patients?q=a", "/reports/waits"],
    ("psy-jones", "psychologist"): ["/inbox", "/caseload"],
    ("nurse-okafor", "infusion-clinician"): ["/clinic"],
    ("dr-gp-patel", "referrer"): ["/referrals/mine", "/referrals/new"],
}


@pytest.mark.parametrize(("who", "paths"), PAGES_OF_ROLE.items(), ids=lambda v: str(v))
def test_every_roles_pages_pass_axe_without_a_serious_violation(
    clinic: str, page: Page, who: tuple[str, str], paths: list[str]
) -> None:
    """axe-core (WCAG 2.1 A and AA rules) on each page a role works in: no violation of
    serious or critical impact."""
    user, role = who
    axe = Axe()
    # The control: axe run this way does find a critical violation where there is one.
    page.set_content('<html lang="en"><title>t</title><main><img src="x.png"></main></html>')
    control = axe.run(page, options={"runOnly": ["wcag2a", "wcag2aa", "wcag21aa"]})
    assert "image-alt" in {v["id"] for v in control.response["violations"]}
    sign_in(page, clinic, user, role)
    found: dict[str, list[str]] = {}
    for path in paths:
        page.goto(f"{clinic}{path}")
        page.wait_for_load_state("load")
        results = axe.run(page, options={"runOnly": ["wcag2a", "wcag2aa", "wcag21aa"]})
        serious = [
            f"{v['id']}: {v['help']} ({len(v['nodes'])})"
            for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")
        ]
        if serious:
            found[path] = serious
    assert not found, found


def test_a_referrer_registers_a_patient_and_writes_a_referral(clinic: str, page: Page) -> None:
    sign_in(page, clinic, "dr-gp-browser", "referrer")
    page.goto(f"{clinic}/referrals/new")
    page.get_by_text("Not registered yet? Register the patient").click()
    page.get_by_label("Given name").fill("Imogen")
    page.locator("#family").fill("Browserworth")
    page.locator("#born").fill("1968-05-14")
    with page.expect_navigation():
        page.get_by_role("button", name="Register").click()
    expect(page.locator(".notice strong")).to_have_text("Imogen Browserworth")
    page.get_by_label("To", exact=True).select_option("psychology")
    page.get_by_label("Reason for referral").fill("Fibromyalgia with low mood; wants CBT")
    page.get_by_label("fibromyalgia", exact=True).check()
    for item in range(1, 10):
        page.locator(f"#phq9-{item}").select_option("1")
    page.get_by_label("Pain", exact=True).fill("7")
    page.get_by_label("Your name").fill("Dr Browser")
    page.get_by_label("Organisation").fill("Test Surgery")
    with page.expect_navigation():
        page.get_by_role("button", name="Send the referral").click()
    page.wait_for_load_state("load")
    assert "/referrals/mine" in page.url
    expect(page.get_by_role("main")).to_contain_text("Imogen Browserworth")


def test_an_admin_downloads_the_waiting_times_as_csv(clinic: str, page: Page) -> None:
    sign_in(page, clinic, "admin-kim", "admin")
    page.goto(f"{clinic}/reports/waits")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    path = download.value.path()
    rows = path.read_text().splitlines()
    assert rows[0].startswith("team,")
    assert len(rows) > 1


def test_finding_a_patient_follows_the_typing(clinic: str, page: Page) -> None:
    """htmx: the matches appear as the name is typed, without pressing Search."""
    sign_in(page, clinic, "dr-mdt-lead", "mdt")
    page.goto(f"{clinic}/patients")
    page.get_by_label("Name or NHS number").press_sequentially("Ba", delay=50)
    expect(page.locator("#found-h")).to_contain_text("found", timeout=5000)
    assert page.locator("#results tbody tr td a").count() >= 1
    assert "q=Ba" in page.url  # the address follows, so back and reload work
