"""What a connector package declares about its kind; the core asks this and names no broker.

A connector is one package with one `ConnectorKind` subclass, registered under its name in
the ``natsbridge.connectors`` entry-point group (see bridge.registry)::

    [project.entry-points."natsbridge.connectors"]
    redis = "natsbridge_redis:connector"          # connector = RedisKind()

The kind declares its config models (`connection_model`, `source_model`, `sink_model`),
which of the sink's fields are templates, the ``{{placeholders}}`` its messages fill, how its
addresses match a source's patterns, the checks a route of this kind must pass, the dedup
id of a message it read, and how a route's endpoints are described. The config loader,
the JSON Schema, `describe`, the mapper, the templates and the dead letters read all of it
from here. Only `open_source` and `open_sink` touch the broker: import the driver there,
never at module level, so that ``natsbridge validate`` works without it installed.

Messages carry an `Origin` (bridge.envelope) that the kind defines as a NamedTuple whose
first fields are ``connection`` and ``kind`` and the rest its own coordinates, each None
when unknown::

    class RedisOrigin(NamedTuple):
        connection: str
        kind: str
        stream: str | None = None      # the address the message arrived on
        entry_id: str | None = None

Dead letters show every coordinate by name; `origin_value(name)` makes one a placeholder.

Per-message functions (`Placeholder.get`, `match`'s matcher, `check_address`'s check,
`dedup_id`) are fetched once when a route is compiled and called for every message: keep
them cheap and free of I/O. Everything else runs at config load or connect time.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from natsbridge.bridge.config.model import Endpoint, Model
from natsbridge.bridge.envelope import Envelope, Origin
from natsbridge.bridge.errors import ConfigError, TemplateError
from natsbridge.mappings.headers import encode_value
from natsbridge.mappings.templates import Captures, Matcher

if TYPE_CHECKING:
    from natsbridge.bridge.config.loader import Route
    from natsbridge.bridge.config.model import BridgeSettings, RouteSpec
    from natsbridge.bridge.connector import Sink, Source
    from natsbridge.bridge.declare import Declaration, Observed
    from natsbridge.bridge.runtime.buffer import Buffers

Feature = Literal["exactly_once", "request_reply", "direct"]
Side = Literal["from", "to"]


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A value read from each message: a ``{{name}}`` of templates, or a source's address.

    `get` gives the value as text and raises TemplateError when the message has none.
    `tokens`, if set, gives it for a NATS subject (dot-separated tokens, each valid); by
    default the templates escape `get`'s text word by word (mappings.escaping) unless the
    kind's addresses are subjects already (`ConnectorKind.subject_addresses`).
    """

    get: Callable[[Envelope], str]
    tokens: Callable[[Envelope], str] | None = None


class Finding(NamedTuple):
    """A problem (or, with `warning`, a remark) about a route, at `path` within the route.

    `path` is relative to the route: ``("from", "queue")``, ``("to", "topic")``,
    ``("name",)``, ``("delivery",)``. The loader adds the file, line and column.
    """

    path: tuple[str | int, ...]
    message: str
    warning: bool = False


def origin_value(name: str) -> Placeholder:
    """The placeholder of Origin coordinate `name` (TemplateError when it is None)."""

    def get(env: Envelope) -> str:
        value = getattr(env.origin, name, None)
        if value is None:
            raise TemplateError(f"{{{{{name}}}}}: the message's origin has no {name}")
        return str(value)

    return Placeholder(get)


def remembered(check: Callable[[str], object], limit: int) -> Callable[[str], None]:
    """`check` of an address, skipped for the addresses it already passed (at most `limit`).

    A route writes the same handful of addresses over and over, and parsing one each time
    costs (a STOMP destination: ~4% of a route). Beyond `limit` the memory starts over.
    """
    valid: set[str] = set()

    def check_once(address: str) -> None:
        if address not in valid:
            check(address)
            if len(valid) >= limit:
                valid.clear()
            valid.add(address)

    return check_once


def first_match(patterns: tuple[str, ...], match: Callable[[str, str], Captures | None]) -> Matcher:
    """A matcher trying `match(pattern, address)` for each of `patterns`, in order."""

    def matcher(address: str) -> Captures | None:
        for pattern in patterns:
            caps = match(pattern, address)
            if caps is not None:
                return caps
        return None

    return matcher


def _subject(env: Envelope) -> str:
    return env.subject


class ConnectorKind:
    """One connection kind (``kind: <name>`` in the config): subclass it in a connector.

    Class attributes declare the kind; methods have working defaults except the two that
    open a source or sink. The registry holds one instance per kind.
    """

    name: ClassVar[str]
    """The kind's name: ``kind:`` in the config and the entry point's name."""
    connection_model: ClassVar[type[Model]]
    """The ``connections.<name>`` model; it has a field ``kind: Literal["<name>"]``."""
    source_model: ClassVar[type[Endpoint] | None] = None
    """The ``from:`` model (an Endpoint: it names its connection); None: cannot be a source."""
    sink_model: ClassVar[type[Endpoint] | None] = None
    """The ``to:`` model (an Endpoint); None: cannot be a sink."""
    sink_templates: ClassVar[tuple[str, ...]] = ()
    """The sink's template fields: [0] renders the address (Envelope.subject), a field
    named ``key`` renders Envelope.key; a field left None is not rendered."""
    address: ClassVar[Placeholder] = Placeholder(_subject)
    """The address a message from this kind arrived on: what ``{{wildcard(n)}}`` matches
    against the source's patterns and ``{{partition(n)}}`` hashes."""
    address_noun: ClassVar[str] = "address"
    """How errors name that address ("routing key", "destination")."""
    placeholders: ClassVar[Mapping[str, Placeholder]] = {}
    """The ``{{name}}`` placeholders a source of this kind fills, lower-case names."""
    subject_addresses: ClassVar[bool] = False
    """Its addresses are NATS subjects: a template into a sink of this kind is checked as a
    subject (``$n`` reads as ``{{wildcard(n)}}``), values from a source of this kind
    enter subjects unescaped, and values from other kinds are escaped."""
    coordinate_headers: ClassVar[tuple[str, ...]] = ()
    """Headers its source adds that say where a message came from (``Kafka-Offset``):
    a dead letter leaving the buffer, whose Origin is gone, shows them."""
    drivers: ClassVar[tuple[str, ...]] = ()
    """Top-level modules of the client library ("pika"); checked before opening."""
    extra: ClassVar[str | None] = None
    """The pip extra that installs them: ``pip install 'natsbridge[<extra>]'``."""
    exactly_once: ClassVar[str | None] = None
    """How errors name the sinks of this kind that give exactly_once ("a Kafka sink");
    None: none does. `supports` decides for one sink."""
    request_reply: ClassVar[tuple[str | None, str | None]] = (None, None)
    """How errors name the (source, sink) of this kind that carry request_reply ("an amqp
    source", "an amqp sink"): a source that answers (a Responder), a sink that asks (a
    Requester); None: it cannot."""
    holds_buffers: ClassVar[bool] = False
    """A connection of this kind can hold route buffers (``buffer: {mode: jetstream,
    connection: <it>}``): `open_buffers` returns the backend (bridge.runtime.buffer)."""
    direct: ClassVar[tuple[str | None, str | None]] = (None, None)
    """How errors name the (source, sink) of this kind that a route with ``buffer: none``
    can join ("a Kafka source"): a source that redelivers what it handed out and was not
    acked (the message stays safe there until the sink confirmed it), a sink whose
    confirm means the destination stored it; None: it cannot."""

    # ------------------------------------------------------------ addresses

    def source_patterns(self, source: Model) -> tuple[str, ...]:
        """The addresses `source` takes, in its own syntax (empty: it takes everything)."""
        return ()

    def match(self, patterns: tuple[str, ...]) -> Matcher:
        """A matcher of addresses against `patterns` (non-empty); TemplateError if one is bad.

        Called once per template; the default compares whole addresses (no wildcards).
        """
        return lambda address: () if address in patterns else None

    def stars(self, pattern: str) -> int:
        """How many ``*`` wildcards (``{{wildcard(n)}}`` captures) `pattern` has."""
        return 0

    def check_address(self, connection: Model) -> Callable[[str], None] | None:
        """A check of a rendered sink address (raises a MappingError), or None for none.

        A kind with `subject_addresses` needs none: the template checks the subject.
        """
        return None

    # ------------------------------------------------------------ guarantees and checks

    def dedup_id(self, envelope: Envelope) -> str | None:
        """An id that is the same each time this source reads the same message, or None.

        Used under exactly_once. The default is the message id the source found.
        """
        return encode_value(envelope.msg_id) if envelope.msg_id else None

    def supports(self, feature: Feature, side: Side, endpoint: Model) -> bool:
        """Whether `endpoint`, this route's source ("from") or sink ("to"), gives `feature`.

        The default follows `exactly_once`, `request_reply` and `direct`; override it when
        only some endpoints of the kind can (a JetStream sink, not a core NATS one).
        """
        if feature == "exactly_once":
            return side == "to" and self.exactly_once is not None
        if feature == "direct":
            return self.direct[side == "to"] is not None
        return self.request_reply[side == "to"] is not None

    def label(self, endpoint: Model) -> str:
        """How errors name this kind of endpoint ("core NATS", "JetStream"); default: name."""
        return self.name

    def check_source(self, source: Endpoint, route: RouteSpec | None) -> Iterable[Finding]:
        """What is wrong with `source` beyond its model (names the broker would refuse).

        `route` is None when the route's own keys are invalid (reported already): check
        what does not depend on them.
        """
        return ()

    def check_sink(self, sink: Endpoint, route: RouteSpec | None) -> Iterable[Finding]:
        """What is wrong with `sink` beyond its model; `route` as for check_source."""
        return ()

    def writes_back(self, source: Model) -> dict[str, Any]:
        """`to:` fields (no `connection`) of a sink writing where `source` reads, or {}.

        A migration in cutover feeds the legacy consumers through such a sink; fields
        missing here are taken from the migration's `back:` (or reported missing).
        """
        return {}

    def reads_back(self, sink: Model, name: str) -> dict[str, Any]:
        """`from:` fields (no `connection`) of a source reading what `sink` wrote, or {}.

        `natsbridge dlq replay --destination` reads a route's `dead_letters:` back through
        it; `name` is the consumer (group) to read with, so a replay goes on where the
        last one stopped. {} when what `sink` wrote cannot be read back (core NATS).
        """
        return {}

    def describe_source(self, source: Model) -> str:
        """Where `source` reads, without its connection name ("queue orders")."""
        return self.name

    def describe_sink(self, sink: Model) -> str:
        """Where `sink` writes, without its connection name ("topic events")."""
        return self.name

    def preview_origin(
        self, source: Endpoint, address: str, partition: int | None
    ) -> Origin | None:
        """The Origin of a message from `address` for ``natsbridge map`` (no broker)."""
        return None

    # ------------------------------------------------------------ declared resources

    def declarations(self, route: Route, side: Side) -> list[Declaration]:
        """The resources `side` of `route` creates when missing or needs (no I/O).

        The core logs each one created (`bridge.declare.log_created`, which the connector
        calls when it creates one), compares an existing one's settings with these before
        the route's first connect, and lists them in ``run --dry-run``. Default: none.
        """
        return []

    async def observe(self, connection: Model, declarations: list[Declaration]) -> list[Observed]:
        """What the broker of `connection` has for each of `declarations`, in order: its
        settings (the declarations' names for them), or None when it does not exist.

        Opens its own short connection and creates nothing. NotImplementedError (the
        default): this kind cannot say.
        """
        raise NotImplementedError

    # ------------------------------------------------------------ runtime

    def source(self, route: Route, connection: Model, bridge: BridgeSettings) -> Source:
        """The source for `route` through `connection`; ConfigError if the driver is missing."""
        self.require_driver()
        return self.open_source(route, connection, bridge)

    def sink(self, route: Route, connection: Model, bridge: BridgeSettings) -> Sink:
        """The sink for `route` through `connection`; ConfigError if the driver is missing."""
        self.require_driver()
        return self.open_sink(route, connection, bridge)

    def open_source(self, route: Route, connection: Model, bridge: BridgeSettings) -> Source:
        """Build the source (import the driver here); no I/O until its connect()."""
        raise ConfigError([f"kind {self.name} cannot be a source"])

    def open_sink(self, route: Route, connection: Model, bridge: BridgeSettings) -> Sink:
        """Build the sink (import the driver here); no I/O until its connect()."""
        raise ConfigError([f"kind {self.name} cannot be a sink"])

    def open_buffers(self, name: str, connection: Model, bridge: BridgeSettings) -> Buffers:
        """The buffer backend on connection `name` (no I/O until its open())."""
        raise ConfigError([f"a {self.name} connection cannot hold a buffer"])

    def driver_loggers(self) -> Mapping[str, int]:
        """The client library's loggers and the level each keeps unless ``--driver-logs``.

        The default quiets each module of `drivers` below WARNING: client libraries log
        every connection step, and the route logs what matters once.
        """
        return {module: logging.WARNING for module in self.drivers}

    def require_driver(self) -> None:
        """ConfigError naming the pip extra when a module in `drivers` is not installed."""
        missing = [m for m in self.drivers if importlib.util.find_spec(m) is None]
        if missing:
            install = f"pip install 'natsbridge[{self.extra}]'" if self.extra else "install it"
            raise ConfigError(
                [f"kind {self.name} needs the {self.name} driver ({', '.join(missing)}): {install}"]
            )
