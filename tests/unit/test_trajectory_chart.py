"""The MDT's combined trajectory (issue 13): PHQ-9, GAD-7, pain NRS and MME on one time
axis, each on its own scale, the policy's thresholds drawn where they belong, infusions and
therapy sessions marked, and all of it in the text alternative."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from services.coordinator.domain import MeasurePoint
from services.web.charts import (
    BOTTOM,
    HEIGHT,
    MARK_ROW,
    TOP,
    trajectory_svg,
    treatments_of,
)
from shared.policy import clinical_policy

T0 = datetime(2026, 6, 1, 10, tzinfo=UTC)


def point(days: int, score: float) -> MeasurePoint:
    return MeasurePoint(at=T0 + timedelta(days=days), score=score, source="test")


def test_every_measure_and_treatment_on_one_axis() -> None:
    measures = {
        "phq9": [point(0, 18), point(28, 9)],
        "gad7": [point(0, 12)],
        "pain_nrs": [point(0, 8), point(14, 5)],
        "opioid_mme": [point(0, 200)],  # beyond the usual scale: the scale grows to it
    }
    timeline = [
        (T0 + timedelta(days=3), "infusion.session.completed"),
        (T0 + timedelta(days=6), "infusion.session.completed"),
        (T0 + timedelta(days=10), "appointment.attended"),
        (T0 + timedelta(days=11), "measure.recorded"),  # not a treatment
    ]
    chart = trajectory_svg(measures, treatments_of(timeline))
    assert chart.count('class="mark mark-infusion"') == 2
    assert chart.count('class="mark mark-therapy"') == 1
    assert chart.count('class="point line-phq9"') == 2
    assert chart.count('<polyline class="series line-phq9"') == 1
    assert '<polyline class="series line-gad7"' not in chart  # one point is no line
    desc = re.search(r'<desc id="trajectory-desc">([^<]*)</desc>', chart)
    assert desc is not None
    assert "PHQ-9: 18 on 01 Jun 2026, 9 on 29 Jun 2026" in desc.group(1)
    assert "infusions given: 2; therapy sessions attended: 1" in desc.group(1)

    # PHQ-9 caseness drawn on PHQ-9's scale: 10 of 27 up the plot.
    caseness = clinical_policy().change.phq9_caseness
    plot_bottom = HEIGHT - BOTTOM - MARK_ROW
    expected = TOP + (1 - caseness / 27) * (plot_bottom - TOP)
    line = re.search(r'class="threshold line-phq9"[^>]*y1="([\d.]+)"', chart)
    assert line is not None and abs(float(line.group(1)) - expected) < 0.1
    # The MME point sits at the top of its grown scale, not off the chart.
    mme = re.search(r'class="point line-opioid_mme"[^>]*cy="([\d.]+)"', chart)
    assert mme is not None and float(mme.group(1)) >= TOP


def test_an_empty_pathway_says_so() -> None:
    chart = trajectory_svg({}, [])
    assert "PHQ-9: none" in chart and "<circle" not in chart and "<rect" not in chart
