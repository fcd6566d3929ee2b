"""The seam between parity/lag and the brokers: each kind's `parity` module.

A connector kind takes part in migrations by shipping a module named ``parity`` next to
its kind object (``natsbridge.connectors.kafka.parity`` for the kind registered as
``natsbridge.connectors.kafka:connector``), found through the registry like the kind
itself, so that the core names no broker. A legacy kind's module provides the
`LegacySide` functions, the NATS kind's the `StreamSide` functions, and both the
`DrainAddresses` functions (`natsbridge drain --from CONNECTION:ADDRESS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, cast

from natsbridge.bridge.config.model import Endpoint, Model
from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import PermanentError
from natsbridge.bridge.migrate.compare import Seen
from natsbridge.bridge.registry import available


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One stored JetStream message: sequence, time (server clock, seconds), content."""

    seq: int
    time: float
    subject: str
    headers: Headers
    payload: bytes


StreamReader = Callable[[float, Callable[[StreamMessage], Seen]], Awaitable[list[Seen]]]
"""Reads the migration's stream from a time (epoch seconds) to its last message now,
converting each message as it arrives (payloads are not kept)."""


@dataclass(frozen=True, slots=True)
class LegacyContext:
    """What a legacy side needs to know about one migration."""

    migration: str
    source: Endpoint  # the legacy endpoint (the mirror route's `from:`)
    connection: Model  # its connection
    mirror_route: str  # the route copying legacy -> NATS: whose consumer lags
    data_dir: str  # where a parity tap keeps its ledger
    headers: Sequence[str]  # header names hashed with key and payload
    stream: str  # the JetStream stream the mirror writes to


class LegacySide(Protocol):
    """A legacy kind's `parity` module."""

    async def collect(
        self, context: LegacyContext, since: float, read_stream: StreamReader
    ) -> tuple[list[Seen], list[Seen]]:
        """Both sides as Seen, legacy first: from `since` (stream records earlier are context)."""

    async def open_tap(self, context: LegacyContext) -> None:
        """Start recording what the legacy side delivers (entering verify), if it must."""

    async def close_tap(self, context: LegacyContext) -> None:
        """Stop recording and forget what was recorded (leaving verify)."""

    async def lag(self, context: LegacyContext) -> tuple[int | None, str]:
        """Messages the mirror has not taken yet, and what was measured."""


class StreamSide(Protocol):
    """The NATS kind's `parity` module: the stream and its consumers."""

    async def read_stream(
        self,
        name: str,
        connection: Model,
        stream: str,
        since: float,
        convert: Callable[[StreamMessage], Seen],
    ) -> list[Seen]:
        """Every message of `stream` stored at or after `since`, in order, converted."""

    async def consumer_pending(
        self, name: str, connection: Model, stream: str, durable: str
    ) -> int | None:
        """What `durable` has not had acked yet, or None when it does not exist."""


class DrainAddresses(Protocol):
    """How a kind reads `natsbridge drain`'s ADDRESS: a route's `from:`/`to:` fields."""

    def drain_source(self, address: str, route: str) -> dict[str, Any]:
        """`from:` fields (no `connection`) that read what sits at `address`."""

    def drain_sink(self, address: str) -> dict[str, Any]:
        """`to:` fields (no `connection`) that write to `address`."""


def parity_module(kind: str) -> ModuleType:
    """The `parity` module of `kind`; PermanentError when the kind has none."""
    package = available().get(kind, "").partition(":")[0]
    name = f"{package}.parity"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if not package or exc.name in (package, name):
            raise PermanentError(
                f"kind {kind} does not take part in migrations (it has no parity module)"
            ) from None
        raise


def legacy_side(kind: str) -> LegacySide:
    """The legacy side of `kind`."""
    return cast(LegacySide, parity_module(kind))


def stream_side(kind: str) -> StreamSide:
    """The NATS side (`kind` is the NATS connection's)."""
    return cast(StreamSide, parity_module(kind))


def drain_addresses(kind: str) -> DrainAddresses:
    """How `kind` reads a drain address."""
    return cast(DrainAddresses, parity_module(kind))
