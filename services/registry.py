"""Every carepath service, by name: the one place that knows all four."""

from __future__ import annotations

import importlib

from shared.runtime import ServiceSpec
from shared.settings import SERVICES


def spec_of(service: str) -> ServiceSpec:
    if service not in SERVICES:
        raise KeyError(service)
    module = importlib.import_module(f"services.{service}.app")
    spec: ServiceSpec = module.SPEC
    return spec


def all_specs() -> list[ServiceSpec]:
    return [spec_of(service) for service in SERVICES]
