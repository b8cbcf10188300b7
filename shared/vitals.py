"""Critically abnormal vital signs (issue 12: SpO2 45, systolic 60 are recorded and raise
an urgent alert, never refused): the one judgement the infusions service publishes on
and the coordinator alerts on."""

from __future__ import annotations

from shared.policy import VitalsPolicy, clinical_policy


def critical_vitals(
    systolic: int, heart_rate: int, spo2: int, policy: VitalsPolicy | None = None
) -> list[str]:
    """Critically abnormal readings (issue 12: SpO2 45, systolic 60): NEWS2 red scores for
    systolic pressure and pulse, SpO2 below every BTS target range (local policy)."""
    vitals = policy or clinical_policy().vitals
    found: list[str] = []
    if systolic <= vitals.critical_low_systolic:
        found.append(f"systolic {systolic} ≤ {vitals.critical_low_systolic}")
    if systolic >= vitals.critical_high_systolic:
        found.append(f"systolic {systolic} ≥ {vitals.critical_high_systolic}")
    if heart_rate <= vitals.critical_low_heart_rate:
        found.append(f"pulse {heart_rate} ≤ {vitals.critical_low_heart_rate}")
    if heart_rate >= vitals.critical_high_heart_rate:
        found.append(f"pulse {heart_rate} ≥ {vitals.critical_high_heart_rate}")
    if spo2 < vitals.critical_low_spo2:
        found.append(f"SpO2 {spo2}% < {vitals.critical_low_spo2}%")
    return found
