"""The `stomp` kind: what the core knows about STOMP routes (see bridge.kind)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from natsbridge.bridge.config.model import Endpoint, Model
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.kind import ConnectorKind, Matcher, Placeholder, first_match
from natsbridge.connectors.stomp.config import StompConnection, StompSink, StompSource
from natsbridge.mappings import stomp
from natsbridge.mappings.headers import STOMP_DESTINATION, STOMP_MESSAGE_ID

if TYPE_CHECKING:
    from natsbridge.bridge.config.loader import Route
    from natsbridge.bridge.config.model import BridgeSettings
    from natsbridge.bridge.connector import Sink, Source


class StompOrigin(NamedTuple):
    """Where a STOMP message came from."""

    connection: str
    kind: str
    destination: str | None = None  # as received, with its prefix (/queue/, /topic/ …)


def _destination(env: Envelope) -> str:
    o = env.origin
    return o.destination if o is not None and o.destination is not None else env.subject


def _destination_name(env: Envelope) -> str:
    return stomp.destination_name(_destination(env))


class StompKind(ConnectorKind):
    """STOMP 1.2 (ActiveMQ Classic, RabbitMQ's STOMP plugin): destinations."""

    name = "stomp"
    connection_model = StompConnection
    source_model = StompSource
    sink_model = StompSink
    sink_templates = ("destination",)
    address = Placeholder(_destination)
    address_noun = "destination"
    # {{destination}} is the name without its prefix (/topic/, /queue/, /exchange/X/ …)
    placeholders: ClassVar[Mapping[str, Placeholder]] = {
        "destination": Placeholder(_destination_name)
    }
    coordinate_headers = (STOMP_DESTINATION, STOMP_MESSAGE_ID)
    drivers = ("stomp",)
    extra = "stomp"
    direct = ("a STOMP source", "a STOMP sink")

    def driver_loggers(self) -> Mapping[str, int]:
        """stomp.py logs under "stomp.py", every connection step at INFO."""
        return {"stomp.py": logging.WARNING}

    def source_patterns(self, source: Model) -> tuple[str, ...]:
        """The subscribed destination (a pattern: ``*`` and ``>``/``#`` by dialect)."""
        assert isinstance(source, StompSource)
        return (source.destination,)

    def match(self, patterns: tuple[str, ...]) -> Matcher:
        """Destinations against destination patterns of the same prefix."""
        return first_match(patterns, stomp.match_destination)

    def stars(self, pattern: str) -> int:
        """The ``*`` tokens of the pattern's name."""
        return stomp.pattern_stars(pattern)

    def check_address(self, connection: Model) -> Callable[[str], None]:
        """A rendered destination must be valid for the broker's dialect."""
        assert isinstance(connection, StompConnection)
        dialect = connection.dialect

        def check(destination: str) -> None:
            stomp.parse_destination(destination, dialect)

        return check

    def writes_back(self, source: Model) -> dict[str, Any]:
        """The destination, unless it has wildcards."""
        assert isinstance(source, StompSource)
        wild = any(mark in source.destination for mark in ("*", ">", "#"))
        return {} if wild else {"destination": source.destination}

    def describe_source(self, source: Model) -> str:
        """The destination."""
        assert isinstance(source, StompSource)
        return source.destination

    def describe_sink(self, sink: Model) -> str:
        """The destination template."""
        assert isinstance(sink, StompSink)
        return sink.destination

    def preview_origin(self, source: Endpoint, address: str, partition: int | None) -> StompOrigin:
        """A message received on destination `address`."""
        return StompOrigin(source.connection, "stomp", destination=address)

    def open_source(self, route: Route, connection: Model, bridge: BridgeSettings) -> Source:
        """A client-individual subscription (connectors/stomp/source.py)."""
        from natsbridge.connectors.stomp.source import StompDestinationSource

        assert isinstance(connection, StompConnection)
        return StompDestinationSource(route, connection, route.source.connection)

    def open_sink(self, route: Route, connection: Model, bridge: BridgeSettings) -> Sink:
        """SEND with receipts (connectors/stomp/sink.py)."""
        from natsbridge.connectors.stomp.sink import StompDestinationSink

        assert isinstance(connection, StompConnection)
        return StompDestinationSink(route, connection, route.sink.connection)


connector = StompKind()
"""The `stomp` kind (entry point ``natsbridge.connectors: stomp``)."""
