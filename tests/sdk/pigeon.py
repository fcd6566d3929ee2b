"""A connector kind that lives outside natsbridge, written only against natsbridge.sdk.

Pigeon lofts: a source reads coops whose names are ``/``-separated levels (``+`` one
level in a pattern), a sink writes to a coop. Messages live in memory (`LOFTS`), so a
route runs without any broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar, Literal, NamedTuple

from natsbridge.sdk import (
    AckOnce,
    BridgeSettings,
    ConnectorKind,
    Endpoint,
    Envelope,
    Finding,
    Incoming,
    MappingError,
    Matcher,
    Model,
    Placeholder,
    Route,
    RouteSpec,
    Sink,
    Source,
    Template,
    origin_value,
)

LOFTS: dict[str, list[Envelope]] = {}  # coop -> messages, both directions
SETTLED: list[BaseException | None] = []  # every ack a pigeon source received


class PigeonConnection(Model):
    """A loft."""

    kind: Literal["pigeon"]
    loft: str


class PigeonSource(Endpoint):
    """Read these coops (patterns: ``+`` is one level)."""

    coops: list[str]


class PigeonSink(Endpoint):
    """Write to a coop."""

    coop: Template


class PigeonOrigin(NamedTuple):
    """Where a pigeon came from."""

    connection: str
    kind: str
    coop: str | None = None
    ring: int | None = None


def _coop(env: Envelope) -> str:
    o = env.origin
    return o.coop if isinstance(o, PigeonOrigin) and o.coop is not None else env.subject


class PigeonKind(ConnectorKind):
    """Pigeon lofts."""

    name = "pigeon"
    connection_model = PigeonConnection
    source_model = PigeonSource
    sink_model = PigeonSink
    sink_templates = ("coop",)
    address = Placeholder(_coop)
    address_noun = "coop"
    placeholders: ClassVar[Mapping[str, Placeholder]] = {
        "coop": address,
        "ring": origin_value("ring"),
    }
    exactly_once = "a pigeon sink"

    def source_patterns(self, source: Model) -> tuple[str, ...]:
        assert isinstance(source, PigeonSource)
        return tuple(source.coops)

    def match(self, patterns: tuple[str, ...]) -> Matcher:
        split = [p.split("/") for p in patterns]

        def match(address: str) -> tuple[str, ...] | None:
            levels = address.split("/")
            for pattern in split:
                if len(pattern) == len(levels) and all(
                    p in ("+", level) for p, level in zip(pattern, levels, strict=True)
                ):
                    return tuple(lv for p, lv in zip(pattern, levels, strict=True) if p == "+")
            return None

        return match

    def stars(self, pattern: str) -> int:
        return pattern.split("/").count("+")

    def check_address(self, connection: Model) -> Callable[[str], None]:
        def check(coop: str) -> None:
            if " " in coop:
                raise MappingError(f"a coop name has no spaces: {coop!r}")

        return check

    def dedup_id(self, envelope: Envelope) -> str | None:
        o = envelope.origin
        return f"pigeon:{o.coop}:{o.ring}" if isinstance(o, PigeonOrigin) else None

    def check_sink(self, sink: Endpoint, route: RouteSpec | None) -> Iterator[Finding]:
        assert isinstance(sink, PigeonSink)
        if sink.coop == "hawk":
            yield Finding(("to", "coop"), "a pigeon never flies to the hawk")

    def describe_source(self, source: Endpoint) -> str:
        assert isinstance(source, PigeonSource)
        return f"coops {','.join(source.coops)}"

    def describe_sink(self, sink: Endpoint) -> str:
        assert isinstance(sink, PigeonSink)
        return f"coop {sink.coop}"

    def open_source(self, route: Route, connection: Model, bridge: BridgeSettings) -> Source:
        assert isinstance(route.source, PigeonSource)
        return _Source(route.source)

    def open_sink(self, route: Route, connection: Model, bridge: BridgeSettings) -> Sink:
        return _Sink()


class _Source:
    """Hands out what is in the source's coops once, then nothing."""

    def __init__(self, config: PigeonSource) -> None:
        self.config = config
        self.ready: list[Incoming] = []

    async def connect(self) -> None:
        matches = connector.match(tuple(self.config.coops))
        for coop in [coop for coop in LOFTS if matches(coop) is not None]:
            for ring, env in enumerate(LOFTS.pop(coop)):
                env.origin = PigeonOrigin(self.config.connection, "pigeon", coop, ring)
                self.ready.append(Incoming(env, AckOnce(SETTLED.append)))

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        batch, self.ready = self.ready[:max_messages], self.ready[max_messages:]
        if not batch:
            await asyncio.sleep(min(timeout, 0.05))
        return batch

    async def close(self) -> None:
        return None


class _Sink:
    async def connect(self) -> None:
        return None

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        for env in envelopes:
            LOFTS.setdefault(env.subject, []).append(env)
        return [None] * len(envelopes)

    async def close(self) -> None:
        return None


connector = PigeonKind()
