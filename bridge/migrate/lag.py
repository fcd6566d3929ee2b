"""Lag of a migration on both sides: what is waiting to be copied or consumed.

* legacy: what the mirror (route ``<name>.to-nats``) has not taken yet, as the legacy
  kind's parity module measures it (Kafka: its consumer group's lag, asked of the group
  coordinator without joining; RabbitMQ: the depth of the queue it consumes).
* nats: what the durable consumer feeding the legacy side in cutover (route
  ``<name>.to-legacy``, its `durable`) has not had acked yet;
  None when that consumer does not exist (before cutover).

Messages taken from the legacy side and still in the bridge's buffer count on neither
side (`natsbridge_buffer_depth` shows them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.migrate.derive import default_durable
from natsbridge.bridge.migrate.kinds import legacy_side, stream_side
from natsbridge.bridge.migrate.model import Migration
from natsbridge.bridge.migrate.parity import connection_of, legacy_context


@dataclass(frozen=True, slots=True)
class Lag:
    """Messages waiting on each side; None where there is nothing to measure."""

    legacy: int | None
    nats: int | None
    legacy_what: str  # "consumer group natsbridge-orders.to-nats", "queue natsbridge.…"
    nats_what: str

    def to_json(self) -> dict[str, Any]:
        """The lag as JSON-ready data."""
        return {
            "legacy": self.legacy,
            "nats": self.nats,
            "legacy_what": self.legacy_what,
            "nats_what": self.nats_what,
        }


def feed_durable(migration: Migration) -> str:
    """The durable of the route feeding NATS -> legacy (bridge.migrate.derive)."""
    return migration.spec.nats.durable or default_durable(migration.name)


async def lag(config: Config, migration: Migration) -> Lag:
    """The lag of `migration` on both sides (see the module doc)."""
    legacy, legacy_what = await legacy_side(migration.legacy_kind).lag(
        legacy_context(config, migration)
    )
    nats = migration.spec.nats
    connection = connection_of(config, nats.connection)
    durable = feed_durable(migration)
    reader = stream_side(str(getattr(connection, "kind", "")))
    pending = await reader.consumer_pending(nats.connection, connection, nats.stream, durable)
    return Lag(legacy, pending, legacy_what, f"consumer {nats.stream}/{durable}")
