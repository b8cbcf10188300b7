"""The web service: the pages where each team does its day's work. It holds no patient
data and has no database: it signs people in, and every page reads and writes through
the other services' APIs as the signed-in person, so each service still decides and
audits. `carepath up` serves it with the services on one port; `carepath serve web` runs
it alone in the distributed mode."""

from __future__ import annotations

from pathlib import Path

from services.web.infusion_pages import INFUSION_PAGES
from services.web.mdt_pages import MDT_PAGES
from services.web.pages import PAGES
from services.web.referral_pages import REFERRAL_PAGES
from services.web.report_pages import REPORT_PAGES
from services.web.sign_in import OidcSignInController, sign_in_limit
from services.web.therapy_pages import THERAPY_PAGES
from shared.runtime import WebSpec

WEB = WebSpec(
    pages=(
        *PAGES,
        OidcSignInController,
        *THERAPY_PAGES,
        *INFUSION_PAGES,
        *REFERRAL_PAGES,
        *MDT_PAGES,
        *REPORT_PAGES,
    ),
    web_dir=Path(__file__).parent,
    middleware=lambda platform: [sign_in_limit(platform).middleware],
)
