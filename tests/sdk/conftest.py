"""The `pigeon` kind (tests/sdk/pigeon.py) installed as if by its own distribution."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint, EntryPoints

import pytest

from natsbridge.bridge import registry
from tests.sdk import pigeon


@pytest.fixture
def pigeon_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The entry points as installed, plus ``pigeon = tests.sdk.pigeon:connector``."""
    real = registry.entry_points

    def with_pigeon(group: str) -> EntryPoints:
        found = list(real(group=group))
        ours = EntryPoint("pigeon", "tests.sdk.pigeon:connector", group)
        return EntryPoints([*found, ours])

    monkeypatch.setattr(registry, "entry_points", with_pigeon)
    registry.available.cache_clear()
    pigeon.LOFTS.clear()
    pigeon.SETTLED.clear()
    yield
    registry.available.cache_clear()
