"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .embedded import Embedded, embedded_app


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """The whole embedded app, one per test module."""
    with embedded_app(tmp_path_factory.mktemp("embedded")) as app:
        yield app
