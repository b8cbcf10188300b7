"""Measure charts as server-rendered SVG: readable without JavaScript, and testable.

Each chart is a small line plot of one measure over time with the clinical thresholds
of CLINICAL.md drawn in as labelled dashed lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from services.coordinator.domain import MeasurePoint
from shared.policy import ChangePolicy, clinical_policy

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 16, 16, 34


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str


@dataclass(frozen=True)
class ChartSpec:
    name: str
    title: str
    maximum: float
    thresholds: tuple[Threshold, ...] = ()


def specs(pain_baseline: float | None, policy: ChangePolicy | None = None) -> list[ChartSpec]:
    """The four charts of the patient page, with CLINICAL.md's lines (the thresholds
    from the clinical policy)."""
    policy = policy or clinical_policy().change
    pain_lines: tuple[Threshold, ...] = ()
    if pain_baseline is not None:
        pain_lines = (
            _relief_line(pain_baseline, policy.pain_meaningful_fraction, "meaningful"),
            _relief_line(pain_baseline, policy.pain_substantial_fraction, "substantial"),
        )
    phq9, gad7 = policy.phq9_caseness, policy.gad7_caseness
    return [
        ChartSpec(
            "phq9",
            "PHQ-9 (depression)",
            27,
            # 20: the PHQ-9's own "severe" band (Kroenke 2001), not a policy setting.
            (Threshold(phq9, f"caseness (PHQ-9 ≥ {phq9})"), Threshold(20, "severe (≥ 20)")),
        ),
        ChartSpec("gad7", "GAD-7 (anxiety)", 21, (Threshold(gad7, f"caseness (GAD-7 ≥ {gad7})"),)),
        ChartSpec("pain_nrs", "Pain NRS (0 to 10)", 10, pain_lines),
        ChartSpec("peg", "PEG (pain, enjoyment, activity; 0 to 10)", 10),
        ChartSpec("opioid_mme", "Opioid use (MME per day)", 0),
    ]


def _relief_line(baseline: float, fraction: float, name: str) -> Threshold:
    return Threshold(
        round(baseline * (1 - fraction), 1), f"{name} relief ({fraction:.0%} below baseline)"
    )


def svg(spec: ChartSpec, points: list[MeasurePoint]) -> str:
    """The chart as an inline SVG element with a text alternative (title and desc)."""
    scores = [p.score for p in points]
    top = max([spec.maximum, *scores, *(t.value for t in spec.thresholds)], default=1) or 1
    times = [p.at for p in points]
    start, end = (min(times), max(times)) if times else (None, None)

    def x(at: datetime) -> float:
        if start is None or end is None or end == start:
            return LEFT + (WIDTH - LEFT - RIGHT) / 2
        share = (at - start).total_seconds() / (end - start).total_seconds()
        return LEFT + share * (WIDTH - LEFT - RIGHT)

    def y(value: float) -> float:
        return TOP + (1 - value / top) * (HEIGHT - TOP - BOTTOM)

    summary = (
        ", ".join(f"{_number(p.score)} on {p.at:%d %b %Y} ({p.source})" for p in points)
        or "no scores yet"
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{spec.name}-title {spec.name}-desc">',
        f'<title id="{spec.name}-title">{escape(spec.title)}</title>',
        f'<desc id="{spec.name}-desc">{escape(summary)}</desc>',
        f'<line class="axis" x1="{LEFT}" y1="{y(0):.1f}" x2="{WIDTH - RIGHT}" y2="{y(0):.1f}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y(0):.1f}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{y(0) + 4:.1f}" text-anchor="end">0</text>',
        f'<text class="tick" x="{LEFT - 6}" y="{y(top) + 4:.1f}" text-anchor="end">'
        f"{_number(top)}</text>",
    ]
    for line in spec.thresholds:
        parts.append(
            f'<line class="threshold" x1="{LEFT}" y1="{y(line.value):.1f}" '
            f'x2="{WIDTH - RIGHT}" y2="{y(line.value):.1f}"/>'
            f'<text class="threshold-label" x="{WIDTH - RIGHT - 4}" y="{y(line.value) - 4:.1f}" '
            f'text-anchor="end">{escape(line.label)}</text>'
        )
    if len(points) > 1:
        path = " ".join(f"{x(p.at):.1f},{y(p.score):.1f}" for p in points)
        parts.append(f'<polyline class="series" points="{path}"/>')
    for p in points:
        parts.append(
            f'<circle class="point" cx="{x(p.at):.1f}" cy="{y(p.score):.1f}" r="4">'
            f"<title>{_number(p.score)} — {p.at:%d %b %Y %H:%M} ({escape(p.source)})</title>"
            "</circle>"
        )
    if start is not None and end is not None:
        parts.append(
            f'<text class="tick" x="{LEFT}" y="{HEIGHT - 10}">{start:%d %b}</text>'
            f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end">'
            f"{end:%d %b}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _number(value: float) -> str:
    return f"{value:g}"
