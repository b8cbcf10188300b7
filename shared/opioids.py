"""Morphine milligram equivalents (MME) per day from recorded opioid use.

CLINICAL.md, Ketamine infusions: opioid reduction is a stated goal; the service computes
MME per day per medicine and in total, from a sourced conversion table the clinical
policy selects, and flags totals at or above 50 and 90 MME/day and a benzodiazepine
alongside (CDC 2022). A medicine the selected table has no factor for is shown as not
counted, never guessed: the total then says it is incomplete.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.policy import OpioidPolicy


class DoseUnit(StrEnum):
    mg = "mg"
    microgram_per_hour = "microgram/hour"  # a transdermal patch's rate


class Route(StrEnum):
    oral = "oral"
    transdermal = "transdermal"
    subcutaneous = "subcutaneous"
    intravenous = "intravenous"
    buccal = "buccal"
    sublingual = "sublingual"


@dataclass(frozen=True)
class Factor:
    """Oral morphine mg per unit: per mg given by this route, or per microgram/hour of a
    patch (whose MME per day is then rate times factor, whatever the frequency)."""

    drug: str
    route: Route
    unit: DoseUnit
    per_unit: float


@dataclass(frozen=True)
class ConversionTable:
    key: str
    source: str
    factors: tuple[Factor, ...]

    def factor(self, drug: str, route: Route, unit: DoseUnit) -> Factor | None:
        name = drug.strip().lower()
        return next(
            (f for f in self.factors if (f.drug, f.route, f.unit) == (name, route, unit)), None
        )


def _oral(**factors: float) -> tuple[Factor, ...]:
    return tuple(Factor(drug, Route.oral, DoseUnit.mg, value) for drug, value in factors.items())


def _patches(**factors: float) -> tuple[Factor, ...]:
    return tuple(
        Factor(drug, Route.transdermal, DoseUnit.microgram_per_hour, value)
        for drug, value in factors.items()
    )


OPIOIDS_AWARE = ConversionTable(
    key="opioids-aware",
    source=(
        "Faculty of Pain Medicine, Opioids Aware: dose equivalents and changing opioids "
        "(oral morphine equivalents; fentanyl 12 microgram/h patch ≈ 30 mg and buprenorphine "
        "5 microgram/h patch ≈ 12 mg oral morphine a day)"
    ),
    factors=_oral(
        codeine=0.1,
        dihydrocodeine=0.1,
        tramadol=0.1,
        tapentadol=0.4,
        morphine=1.0,
        oxycodone=1.5,
        hydromorphone=5.0,
    )
    + _patches(fentanyl=2.5, buprenorphine=2.4),
)

CDC_2022 = ConversionTable(
    key="cdc-2022",
    source=(
        "Dowell et al., CDC Clinical Practice Guideline for Prescribing Opioids for Pain, "
        "MMWR 2022;71(3), Table: MME conversion factors (no factor for buprenorphine)"
    ),
    factors=_oral(
        codeine=0.15,
        tramadol=0.2,
        tapentadol=0.4,
        morphine=1.0,
        oxycodone=1.5,
        hydrocodone=1.0,
        hydromorphone=5.0,
        methadone=4.7,
    )
    + _patches(fentanyl=2.4),
)

TABLES = {table.key: table for table in (OPIOIDS_AWARE, CDC_2022)}

BENZODIAZEPINES = frozenset(
    {
        "alprazolam",
        "chlordiazepoxide",
        "clobazam",
        "clonazepam",
        "diazepam",
        "lorazepam",
        "lormetazepam",
        "midazolam",
        "nitrazepam",
        "oxazepam",
        "temazepam",
    }
)


@dataclass(frozen=True)
class Medicine:
    """One medicine as recorded at an assessment or follow-up."""

    drug: str
    dose: float
    unit: DoseUnit
    route: Route
    doses_per_day: float


@dataclass(frozen=True)
class MedicineMme:
    drug: str
    mme_per_day: float | None  # None: the table has no factor for it
    note: str


@dataclass(frozen=True)
class MmeSummary:
    table: str
    medicines: tuple[MedicineMme, ...]
    total_mme_per_day: float
    complete: bool  # every opioid had a factor
    flags: tuple[str, ...]
    benzodiazepine: bool


def is_benzodiazepine(drug: str) -> bool:
    return drug.strip().lower() in BENZODIAZEPINES


def medicine_mme(medicine: Medicine, table: ConversionTable) -> MedicineMme:
    factor = table.factor(medicine.drug, medicine.route, medicine.unit)
    if factor is None:
        return MedicineMme(
            medicine.drug,
            None,
            f"no {table.key} factor for {medicine.drug} {medicine.route} ({medicine.unit}): "
            "not counted",
        )
    if medicine.unit is DoseUnit.microgram_per_hour:
        mme = medicine.dose * factor.per_unit  # a patch delivers all day
    else:
        mme = medicine.dose * medicine.doses_per_day * factor.per_unit
    return MedicineMme(medicine.drug, round(mme, 1), f"x {factor.per_unit:g} ({table.key})")


def summarise(
    medicines: Iterable[Medicine], table: ConversionTable, flag_at: Sequence[float]
) -> MmeSummary:
    """MME per day of each opioid and in total, with the thresholds reached (highest
    first) and whether a benzodiazepine is taken alongside."""
    recorded = list(medicines)
    benzodiazepine = any(is_benzodiazepine(m.drug) for m in recorded)
    opioids = [medicine_mme(m, table) for m in recorded if not is_benzodiazepine(m.drug)]
    total = round(sum(m.mme_per_day or 0.0 for m in opioids), 1)
    flags = [
        f"≥ {threshold:g} MME/day"
        for threshold in sorted(flag_at, reverse=True)
        if total >= threshold
    ]
    if benzodiazepine and opioids:
        flags.append("benzodiazepine with an opioid")
    return MmeSummary(
        table=table.key,
        medicines=tuple(opioids),
        total_mme_per_day=total,
        complete=all(m.mme_per_day is not None for m in opioids),
        flags=tuple(flags),
        benzodiazepine=benzodiazepine,
    )


def summarise_for(medicines: Iterable[Medicine], policy: OpioidPolicy) -> MmeSummary:
    """MME per day under the clinical policy's table and flag thresholds."""
    flag_at = (policy.high_mme_per_day, policy.very_high_mme_per_day)
    return summarise(medicines, TABLES[policy.conversion_table], flag_at)
