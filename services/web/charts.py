"""Measure charts as server-rendered SVG: readable without JavaScript, and testable.

Each chart is a small line plot of one measure over time with the clinical thresholds
of CLINICAL.md drawn in as labelled dashed lines.
"""

from __future__ import annotations

from collections.abc import Callable
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
    """One measure as drawn: its name in the pathway, its words, the top of its scale (a
    chart of its own, or a series on the combined trajectory) and the lines on it."""

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
    parts += _line(
        points,
        x,
        y,
        "",
        4,
        lambda p: f"{_number(p.score)} — {p.at:%d %b %Y %H:%M} ({escape(p.source)})",
    )
    if start is not None and end is not None:
        parts.append(
            f'<text class="tick" x="{LEFT}" y="{HEIGHT - 10}">{start:%d %b}</text>'
            f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end">'
            f"{end:%d %b}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _titled(label: str) -> Callable[[MeasurePoint], str]:
    return lambda p: f"{escape(label)} {_number(p.score)} — {p.at:%d %b %Y}"


def _on_scale(y: Callable[[float, float], float], top: float) -> Callable[[float], float]:
    return lambda value: y(value, top)


def _line(
    points: list[MeasurePoint],
    x: Callable[[datetime], float],
    y: Callable[[float], float],
    css: str,
    radius: float,
    title: Callable[[MeasurePoint], str],
) -> list[str]:
    """One series: its line (two points or more) and each point with its own words."""
    parts = []
    if len(points) > 1:
        path = " ".join(f"{x(p.at):.1f},{y(p.score):.1f}" for p in points)
        parts.append(f'<polyline class="series{css}" points="{path}"/>')
    for p in points:
        parts.append(
            f'<circle class="point{css}" cx="{x(p.at):.1f}" cy="{y(p.score):.1f}" '
            f'r="{radius:g}"><title>{title(p)}</title></circle>'
        )
    return parts


def _number(value: float) -> str:
    return f"{value:g}"


# --- the combined trajectory (issue 13): every measure and every treatment, one time axis


# Where each treatment shows on the time axis: its timeline event, its mark and its words.
TREATMENTS = {
    "infusion.session.completed": ("infusion", "infusion given"),
    "appointment.attended": ("therapy", "therapy session attended"),
}
MARK_ROW = 14  # the strip under the plot where treatments are marked
LABEL_STEP = 150


def trajectory_series(mme: list[MeasurePoint]) -> list[ChartSpec]:
    """PHQ-9, GAD-7, pain NRS and MME, each on its own full scale, with the policy's lines."""
    policy = clinical_policy()
    change, opioids = policy.change, policy.opioids
    # Room above the very-high line, or above the highest dose recorded.
    mme_top = max([opioids.very_high_mme_per_day * 2, *(p.score * 1.1 for p in mme)])
    return [
        ChartSpec("phq9", "PHQ-9", 27, (Threshold(change.phq9_caseness, "PHQ-9 caseness"),)),
        ChartSpec("gad7", "GAD-7", 21, (Threshold(change.gad7_caseness, "GAD-7 caseness"),)),
        ChartSpec("pain_nrs", "pain NRS", 10),
        ChartSpec(
            "opioid_mme",
            "MME/day",
            mme_top,
            (Threshold(opioids.high_mme_per_day, f"{opioids.high_mme_per_day:g} MME/day"),),
        ),
    ]


def trajectory_svg(
    measures: dict[str, list[MeasurePoint]], treatments: list[tuple[datetime, str]]
) -> str:
    """One chart of the whole pathway: each measure as a share of its own scale on one
    time axis, the policy's thresholds drawn on the scale they belong to, and each
    infusion and therapy session marked under it. Its text alternative lists it all."""
    series = trajectory_series(measures.get("opioid_mme", []))
    points = {s.name: measures.get(s.name, []) for s in series}
    times = [p.at for found in points.values() for p in found] + [at for at, _ in treatments]
    start, end = (min(times), max(times)) if times else (None, None)
    plot_bottom = HEIGHT - BOTTOM - MARK_ROW

    def x(at: datetime) -> float:
        if start is None or end is None or end == start:
            return LEFT + (WIDTH - LEFT - RIGHT) / 2
        return LEFT + (at - start).total_seconds() / (end - start).total_seconds() * (
            WIDTH - LEFT - RIGHT
        )

    def y(value: float, top: float) -> float:
        return TOP + (1 - value / top) * (plot_bottom - TOP)

    described = [
        f"{s.title}: "
        + (", ".join(f"{_number(p.score)} on {p.at:%d %b %Y}" for p in points[s.name]) or "none")
        for s in series
    ]
    counts = {kind: sum(1 for _, k in treatments if k == kind) for kind, _ in TREATMENTS.values()}
    described.append(
        f"infusions given: {counts['infusion']}; therapy sessions attended: {counts['therapy']}"
    )
    parts = [
        f'<svg class="chart trajectory" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-labelledby="trajectory-title trajectory-desc">',
        '<title id="trajectory-title">The whole pathway on one time axis</title>',
        f'<desc id="trajectory-desc">{escape("; ".join(described))}</desc>',
        f'<line class="axis" x1="{LEFT}" y1="{plot_bottom}" '
        f'x2="{WIDTH - RIGHT}" y2="{plot_bottom}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">max</text>',
        f'<text class="tick" x="{LEFT - 6}" y="{plot_bottom + 4}" text-anchor="end">0</text>',
    ]
    for index, s in enumerate(series):
        # Lines of different scales can fall at one height: each label has its own place.
        label_x = WIDTH - RIGHT - 4 - index * LABEL_STEP
        for line in s.thresholds:
            level = y(line.value, s.maximum)
            parts.append(
                f'<line class="threshold line-{s.name}" x1="{LEFT}" y1="{level:.1f}" '
                f'x2="{WIDTH - RIGHT}" y2="{level:.1f}"/>'
                f'<text class="threshold-label line-{s.name}" x="{label_x}" '
                f'y="{level - 4:.1f}" text-anchor="end">{escape(line.label)}</text>'
            )
        parts += _line(
            points[s.name],
            x,
            _on_scale(y, s.maximum),
            f" line-{s.name}",
            3.5,
            _titled(s.title),
        )
    for at, kind in treatments:
        mark_y = plot_bottom + 4
        words = dict(TREATMENTS.values()).get(kind, kind)
        parts.append(
            f'<rect class="mark mark-{kind}" x="{x(at) - 3:.1f}" y="{mark_y}" width="6" '
            f'height="{MARK_ROW - 6}"><title>{escape(words)} — {at:%d %b %Y}</title></rect>'
        )
    if start is not None and end is not None:
        parts.append(
            f'<text class="tick" x="{LEFT}" y="{HEIGHT - 10}">{start:%d %b %Y}</text>'
            f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end">'
            f"{end:%d %b %Y}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def treatments_of(timeline: list[tuple[datetime, str]]) -> list[tuple[datetime, str]]:
    """The infusions and therapy sessions among a pathway's timeline (time, event type)."""
    return [(at, TREATMENTS[kind][0]) for at, kind in timeline if kind in TREATMENTS]
