"""Parity of a migration and its tap: what `migrate verify` and `migrate advance` ask.

`parity(config, migration, window)` has the legacy kind's `parity` module
(bridge.migrate.kinds) read both sides over the window, legacy first so that every copy
in the stream has its original in what was read (or is truly extra), and pairs them
(bridge.migrate.compare). A Kafka topic is read by offsets; a RabbitMQ exchange through a
parity tap and its ledger. `open_tap`/`close_tap` start and end that recording when a
migration enters and leaves verify; kinds that keep their messages need none.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.config.model import Model
from natsbridge.bridge.errors import PermanentError
from natsbridge.bridge.migrate.compare import ParityReport, Seen, compare
from natsbridge.bridge.migrate.kinds import (
    LegacyContext,
    StreamMessage,
    legacy_side,
    stream_side,
)
from natsbridge.bridge.migrate.model import TO_NATS, Migration, route_name


def mirror_route(migration: str) -> str:
    """The route copying legacy -> NATS."""
    return route_name(migration, TO_NATS)


def connection_of(config: Config, name: str) -> Model:
    """The connection named `name` (the config loader checked that it exists)."""
    connection = config.connections.get(name)
    if connection is None:
        raise PermanentError(f"no connection named {name!r}")
    return connection


def legacy_context(config: Config, migration: Migration) -> LegacyContext:
    """What the legacy kind's parity module needs: the mirror route's `from:` if it runs."""
    routes = {route.name: route for route in config.routes}
    mirror = routes.get(mirror_route(migration.name))
    source = mirror.source if mirror is not None else migration.legacy
    return LegacyContext(
        migration=migration.name,
        source=source,
        connection=connection_of(config, source.connection),
        mirror_route=mirror_route(migration.name),
        data_dir=config.bridge.data_dir,
        headers=tuple(migration.spec.verify.headers),
        stream=migration.spec.nats.stream,
    )


async def parity(config: Config, migration: Migration, window: float | None = None) -> ParityReport:
    """Counts, digests, missing and extra of `migration` over the last `window` seconds
    (default: its `verify.window`)."""
    window_s = migration.spec.verify.window if window is None else window
    nats = migration.spec.nats
    nats_connection = connection_of(config, nats.connection)
    reader = stream_side(str(getattr(nats_connection, "kind", "")))

    async def read_stream(since: float, convert: Callable[[StreamMessage], Seen]) -> list[Seen]:
        return await reader.read_stream(
            nats.connection, nats_connection, nats.stream, since, convert
        )

    since = time.time() - window_s
    side = legacy_side(migration.legacy_kind)
    legacy, copies = await side.collect(legacy_context(config, migration), since, read_stream)
    return compare(migration.name, window_s, legacy, copies)


async def open_tap(config: Config, migration: Migration) -> None:
    """Start recording the legacy side (call when a migration enters verify)."""
    await legacy_side(migration.legacy_kind).open_tap(legacy_context(config, migration))


async def close_tap(config: Config, migration: Migration) -> None:
    """Stop recording and drop the ledger (call when a migration leaves verify)."""
    await legacy_side(migration.legacy_kind).close_tap(legacy_context(config, migration))
