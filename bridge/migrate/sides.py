"""Lag and parity of a migration, measured on the brokers (bridge.migrate.lag, .parity)."""

from __future__ import annotations

import importlib
from typing import Any

from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.migrate.model import Migration


async def lag_of(config: Config, migration: Migration) -> Any:
    """Messages waiting on each side: `lag(config, migration)` of bridge.migrate.lag."""
    measure = importlib.import_module("natsbridge.bridge.migrate.lag").lag
    return await measure(config, migration)


async def parity_of(config: Config, migration: Migration) -> Any:
    """The parity report over the migration's `verify.window`."""
    measure = importlib.import_module("natsbridge.bridge.migrate.parity").parity
    return await measure(config, migration, migration.spec.verify.window)
