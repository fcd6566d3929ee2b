"""The `nats` kind: what the core knows about NATS and JetStream routes (see bridge.kind)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from natsbridge.bridge.config.model import Delivery, Endpoint, Model
from natsbridge.bridge.declare import Declaration, Observed
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import SubjectError, TemplateError
from natsbridge.bridge.kind import ConnectorKind, Feature, Finding, Matcher, Placeholder, Side
from natsbridge.connectors.nats.config import NatsConnection, NatsSink, NatsSource
from natsbridge.connectors.nats.declare import observe as observe_streams
from natsbridge.connectors.nats.declare import stream_declaration
from natsbridge.mappings.subjects import validate_pattern
from natsbridge.mappings.templates import subject_matcher

if TYPE_CHECKING:
    from natsbridge.bridge.config.loader import Route
    from natsbridge.bridge.config.model import BridgeSettings, RouteSpec
    from natsbridge.bridge.connector import Sink, Source
    from natsbridge.bridge.runtime.buffer import Buffers


class NatsOrigin(NamedTuple):
    """Where a NATS message came from."""

    connection: str
    kind: str
    subject: str | None = None
    stream_seq: int | None = None  # JetStream stream sequence


def _subject(env: Envelope) -> str:
    o = env.origin
    return o.subject if o is not None and o.subject is not None else env.subject


class NatsKind(ConnectorKind):
    """NATS: core subjects and JetStream streams, as source and as sink."""

    name = "nats"
    connection_model = NatsConnection
    source_model = NatsSource
    sink_model = NatsSink
    sink_templates = ("subject",)
    address = Placeholder(_subject)
    address_noun = "subject"
    placeholders: ClassVar[Mapping[str, Placeholder]] = {"subject": address}
    subject_addresses = True
    drivers = ("nats",)
    exactly_once = "a JetStream sink (to.jetstream)"
    request_reply = ("a core NATS source", "a core NATS sink")
    holds_buffers = True
    direct = ("a JetStream source (from.jetstream)", "a JetStream sink (to.jetstream)")

    def source_patterns(self, source: Model) -> tuple[str, ...]:
        """The subscribed subject pattern."""
        assert isinstance(source, NatsSource)
        return (source.subject,)

    def match(self, patterns: tuple[str, ...]) -> Matcher:
        """Subjects against subject patterns (``*`` one token, ``>`` the rest)."""
        for pattern in patterns:
            try:
                validate_pattern(pattern)
            except SubjectError as exc:
                raise TemplateError(f"source pattern {pattern!r} is invalid: {exc}") from None
        return subject_matcher(patterns)

    def stars(self, pattern: str) -> int:
        """The ``*`` tokens of a subject pattern."""
        return pattern.split(".").count("*")

    def dedup_id(self, envelope: Envelope) -> str | None:
        """The Nats-Msg-Id the message brought, else its JetStream stream sequence."""
        found = super().dedup_id(envelope)
        o = envelope.origin
        if found is None and o is not None and o.stream_seq is not None:
            return f"jetstream:{o.connection}:{o.subject}:{o.stream_seq}"
        return found

    def supports(self, feature: Feature, side: Side, endpoint: Model) -> bool:
        """exactly_once into JetStream; buffer none only with JetStream (core NATS keeps
        nothing nobody acked, and confirms nothing); request_reply through core NATS only."""
        assert isinstance(endpoint, NatsSource | NatsSink)
        if feature == "exactly_once":
            return side == "to" and endpoint.jetstream is not None
        if feature == "direct":
            return endpoint.jetstream is not None
        return endpoint.jetstream is None

    def label(self, endpoint: Model) -> str:
        """``JetStream`` or ``core NATS``."""
        assert isinstance(endpoint, NatsSource | NatsSink)
        return "JetStream" if endpoint.jetstream else "core NATS"

    def check_source(self, source: Endpoint, route: RouteSpec | None) -> Iterator[Finding]:
        """The subject pattern; a default durable name JetStream refuses; core NATS's limits."""
        assert isinstance(source, NatsSource)
        try:
            validate_pattern(source.subject)
        except SubjectError as exc:
            yield Finding(("from", "subject"), str(exc))
        if route is None:
            return
        if source.jetstream is not None:
            if source.jetstream.durable is None and "." in route.name:
                yield Finding(
                    ("name",),
                    f"the default durable 'natsbridge-{route.name}' is not a JetStream name "
                    "(no '.'): rename the route or set from.jetstream.durable",
                )
        elif route.delivery is Delivery.AT_LEAST_ONCE:
            yield Finding(
                ("delivery",),
                "at_least_once from core NATS starts at the buffer: core NATS cannot "
                "redeliver what arrives while the bridge is down",
                warning=True,
            )

    def check_sink(self, sink: Endpoint, route: RouteSpec | None) -> Iterator[Finding]:
        """The subject patterns of a stream the sink would create; core NATS's limits."""
        assert isinstance(sink, NatsSink)
        for i, pattern in enumerate(sink.jetstream.subjects or () if sink.jetstream else ()):
            try:
                validate_pattern(pattern)
            except SubjectError as exc:
                yield Finding(("to", "jetstream", "subjects", i), str(exc))
        if (
            sink.jetstream is None
            and route is not None
            and route.delivery is Delivery.AT_LEAST_ONCE
        ):
            yield Finding(
                ("delivery",),
                "at_least_once to core NATS ends at the publish: core NATS confirms nothing, "
                "so a message published while no subscriber listens is lost (use to.jetstream)",
                warning=True,
            )

    def describe_source(self, source: Model) -> str:
        """``subject S`` or ``stream X subject S``."""
        assert isinstance(source, NatsSource)
        if source.jetstream is None:
            return f"subject {source.subject}"
        return f"stream {source.jetstream.stream} subject {source.subject}"

    def reads_back(self, sink: Model, name: str) -> dict[str, Any]:
        """The stream a JetStream sink writes, read by durable consumer `name`."""
        assert isinstance(sink, NatsSink)
        if sink.jetstream is None:
            return {}  # core NATS keeps nothing to read back
        subject = sink.subject if "{{" not in sink.subject else ">"
        # create: the durable consumer (the stream exists: the dead letters are in it)
        stream = {"stream": sink.jetstream.stream, "durable": name, "create": True}
        return {"subject": subject, "jetstream": stream}

    def describe_sink(self, sink: Model) -> str:
        """``subject S`` or ``stream X subject S``."""
        assert isinstance(sink, NatsSink)
        if sink.jetstream is None:
            return f"subject {sink.subject}"
        return f"stream {sink.jetstream.stream} subject {sink.subject}"

    def preview_origin(self, source: Endpoint, address: str, partition: int | None) -> NatsOrigin:
        """A message published on subject `address`."""
        return NatsOrigin(source.connection, "nats", subject=address)

    def declarations(self, route: Route, side: Side) -> list[Declaration]:
        """The JetStream stream of ``from.jetstream`` / ``to.jetstream`` (none: core NATS)."""
        declaration = stream_declaration(route, side)
        return [] if declaration is None else [declaration]

    async def observe(self, connection: Model, declarations: list[Declaration]) -> list[Observed]:
        """Each stream's settings on the server (stream info), None where missing."""
        assert isinstance(connection, NatsConnection)
        return await observe_streams(connection, declarations)

    def open_source(self, route: Route, connection: Model, bridge: BridgeSettings) -> Source:
        """A core subscription, or a JetStream pull consumer with ``from.jetstream``."""
        from natsbridge.connectors.nats.source import CoreSource, JetStreamSource

        assert isinstance(connection, NatsConnection) and isinstance(route.source, NatsSource)
        if route.source.jetstream is not None:
            return JetStreamSource(route, connection, bridge)
        return CoreSource(route, connection, bridge)

    def open_sink(self, route: Route, connection: Model, bridge: BridgeSettings) -> Sink:
        """Core publish, or a JetStream publish awaiting its PubAck with ``to.jetstream``."""
        from natsbridge.connectors.nats.sink import CoreSink, JetStreamSink

        assert isinstance(connection, NatsConnection) and isinstance(route.sink, NatsSink)
        if route.sink.jetstream is not None:
            return JetStreamSink(route, connection, bridge)
        return CoreSink(route, connection, bridge)

    def open_buffers(self, name: str, connection: Model, bridge: BridgeSettings) -> Buffers:
        """Route buffers as streams in this connection's JetStream (connectors.nats.buffer)."""
        self.require_driver()
        from natsbridge.connectors.nats.buffer import JetStreamBuffers

        assert isinstance(connection, NatsConnection)
        return JetStreamBuffers(name, connection, bridge)


connector = NatsKind()
"""The `nats` kind (entry point ``natsbridge.connectors: nats``)."""
