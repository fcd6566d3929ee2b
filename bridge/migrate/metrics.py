"""Prometheus metrics of the migrations a bridge runs, read at scrape time.

``natsbridge_migration_phase{migration, phase}`` is 1 for the live phase and 0 for the
others; ``natsbridge_migration_parity_ok{migration}`` is 1 or 0 as the last parity
measured (`migrate status`, `advance`) found, with its time in
``natsbridge_migration_parity_checked_timestamp_seconds``; absent before the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.migrate import state
from natsbridge.bridge.migrate.model import PHASES


class MigrationCollector(Collector):
    """The migrations of the config `current()` returns (it changes on reload)."""

    def __init__(self, current: Callable[[], Config]) -> None:
        self.current = current

    def collect(self) -> Iterable[Metric]:
        """natsbridge_migration_* families."""
        config = self.current()
        phase = GaugeMetricFamily(
            "natsbridge_migration_phase",
            "1 for the migration's live phase, 0 for the others",
            labels=["migration", "phase"],
        )
        parity = GaugeMetricFamily(
            "natsbridge_migration_parity_ok",
            "1 if the last parity measured found both sides equal, else 0",
            labels=["migration"],
        )
        checked = GaugeMetricFamily(
            "natsbridge_migration_parity_checked_timestamp_seconds",
            "When the last parity was measured (Unix time)",
            labels=["migration"],
        )
        measured = state.last_parity(config.bridge.data_dir)
        for migration in config.migrations:
            for candidate in PHASES:
                live = 1.0 if candidate is migration.phase else 0.0
                phase.add_metric([migration.name, candidate.value], live)
            last = measured.get(migration.name)
            if isinstance(last, dict) and isinstance(last.get("time"), int | float):
                parity.add_metric([migration.name], 1.0 if last.get("ok") else 0.0)
                checked.add_metric([migration.name], float(last["time"]))
        yield phase
        yield parity
        yield checked
