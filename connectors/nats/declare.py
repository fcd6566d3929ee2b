"""The JetStream streams a NATS route declares, how they are created, and what a server has.

`from.jetstream` and `to.jetstream` name a stream and the settings of STREAM_SETTINGS;
the route creates the stream with them when it is missing (unless ``create: false``),
and the core (bridge.declare) compares the settings the config sets with an existing
stream's. The nats driver is imported inside the functions (``validate`` needs none).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from natsbridge.bridge.declare import Declaration, Observed
from natsbridge.bridge.errors import PermanentError
from natsbridge.bridge.kind import Side
from natsbridge.connectors.nats.config import (
    STREAM_SETTINGS,
    NatsConnection,
    NatsSink,
    NatsSource,
)

if TYPE_CHECKING:
    from nats.js.api import StreamConfig, StreamInfo

    from natsbridge.bridge.config.loader import Route

RESOURCE = "JetStream stream"


def sink_subjects(route: Route) -> list[str]:
    """The subjects a sink's missing stream is created with (PermanentError: none derivable)."""
    from natsbridge.connectors.nats.sink import derived_stream_subjects

    sink = route.sink
    assert isinstance(sink, NatsSink) and sink.jetstream is not None
    if sink.jetstream.subjects:
        return list(sink.jetstream.subjects)
    template = route.templates.get("subject")
    if template is not None:
        derived = derived_stream_subjects(template.text, template.is_literal)
    else:
        derived = derived_stream_subjects(sink.subject, "{{" not in sink.subject)
    if derived == [">"]:
        # A stream on ">" would also capture every reply inbox, PubAcks included.
        raise PermanentError(
            f"route '{route.name}': cannot derive the subjects of JetStream stream "
            f"'{sink.jetstream.stream}' from '{sink.subject}' (no literal prefix); "
            "set to.jetstream.subjects"
        )
    return derived


def stream_declaration(route: Route, side: Side) -> Declaration | None:
    """The stream `side` of `route` uses, or None (core NATS)."""
    endpoint = route.source if side == "from" else route.sink
    assert isinstance(endpoint, NatsSource | NatsSink)
    js = endpoint.jetstream
    if js is None:
        return None
    settings: dict[str, object] = {key: getattr(js, key) for key in STREAM_SETTINGS}
    if isinstance(endpoint, NatsSource):
        settings["subjects"] = [endpoint.subject]
    else:
        # When none can be derived, the sink's connect says so; the stream is still shown.
        with contextlib.suppress(PermanentError):
            settings["subjects"] = sink_subjects(route)
    compared = js.model_fields_set & set(STREAM_SETTINGS)
    return Declaration(
        resource=RESOURCE,
        name=js.stream,
        connection=endpoint.connection,
        settings=settings,
        compared=frozenset(compared),
        create=js.create,
        why_not_created=f"{side}.jetstream.create is false",
        where=f"route '{route.name}' {side}.jetstream",
    )


def stream_config(declaration: Declaration, subjects: list[str], **extra: Any) -> StreamConfig:
    """The nats-py StreamConfig that creates `declaration`'s stream (plus `extra` fields)."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    settings = declaration.settings
    return StreamConfig(
        name=declaration.name,
        subjects=subjects,
        num_replicas=settings["replicas"],  # type: ignore[arg-type]
        storage=StorageType(settings["storage"]),
        retention=RetentionPolicy(settings["retention"]),
        max_msgs=settings["max_msgs"],  # type: ignore[arg-type]
        max_bytes=settings["max_bytes"],  # type: ignore[arg-type]
        max_age=settings["max_age"],  # type: ignore[arg-type]
        discard=DiscardPolicy(settings["discard"]),
        **extra,
    )


def observed_settings(info: StreamInfo) -> Mapping[str, object]:
    """An existing stream's settings under STREAM_SETTINGS' names (unlimited: None)."""
    config = info.config

    def limit(value: float | None) -> float | None:
        return None if value is None or value <= 0 else value

    return {
        "replicas": config.num_replicas or 1,
        "storage": _text(config.storage),
        "retention": _text(config.retention),
        "max_msgs": limit(config.max_msgs),
        "max_bytes": limit(config.max_bytes),
        "max_age": limit(config.max_age),
        "discard": _text(config.discard),
        "subjects": list(config.subjects or []),
    }


def _text(value: object) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


async def observe(connection: NatsConnection, declarations: list[Declaration]) -> list[Observed]:
    """Each declared stream's settings on the server, or None where it is missing."""
    from natsbridge.connectors.nats.client import NatsLink
    from natsbridge.connectors.nats.errors import StreamMissing, translate

    name = declarations[0].connection
    link = await NatsLink.open(name, connection, "natsbridge:declare")
    try:
        jsm = link.client.jsm()
        found: list[Observed] = []
        for declaration in declarations:
            try:
                with translate(f"JetStream stream '{declaration.name}'"):
                    found.append(observed_settings(await jsm.stream_info(declaration.name)))
            except StreamMissing:
                found.append(None)
        return found
    finally:
        await link.close()
