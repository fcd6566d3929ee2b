"""Version 1 of the config file format, declared once: validation, defaults and JSON Schema.

A file has four sections: `bridge` (this bridge's id, data dir and admin endpoint),
`connections` (named brokers, each with a `kind`), `routes` (each `from` one
connection `to` another, with a delivery guarantee) and `migrations` (flows moving from a
legacy broker to NATS in phases, each turned into routes: bridge.migrate). A connection
and a route's `from` and `to` take the fields of their kind, declared by its connector
(bridge.kind); the shared building blocks (Model, Endpoint, Name, Template, Tls, JsName …) are here.
Unknown keys are errors everywhere.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from natsbridge.bridge.config.units import Bytes, Seconds

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
Template = Annotated[str, Field(min_length=1, description="A template: literal text and {{...}}")]


def url_with_scheme(*schemes: str) -> AfterValidator:
    """Check a URL's scheme after interpolation (the schema cannot: values may be `${env:…}`)."""

    def check(url: str) -> str:
        if not url.startswith(tuple(f"{s}://" for s in schemes)):
            expected = " or ".join(f"{s}://" for s in schemes)
            raise ValueError(f"expected a URL starting with {expected}")
        return url

    return AfterValidator(check)


# nats-server refuses these in stream and consumer names (they become subjects and files).
_JETSTREAM_FORBIDDEN = re.compile(r"[\s.*>/\\\x00-\x1f\x7f]")
JETSTREAM_NAME_MAX = 255


def _jetstream_name(name: str) -> str:
    if not name or len(name) > JETSTREAM_NAME_MAX:
        raise ValueError(f"expected a JetStream name of 1 to {JETSTREAM_NAME_MAX} characters")
    bad = _JETSTREAM_FORBIDDEN.search(name)
    if bad is not None:
        raise ValueError(
            f"a JetStream name cannot contain {bad.group()!r} "
            "(no whitespace, '.', '*', '>', '/', '\\' or control characters)"
        )
    return name


JsName = Annotated[str, AfterValidator(_jetstream_name)]
"""A JetStream stream or consumer name."""


class Model(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


class Endpoint(Model):
    """Base of every kind's `from:` and `to:` model: the connection it goes through."""

    connection: Name


class Delivery(StrEnum):
    """What a route promises about loss and duplicates (see the README's guarantees table)."""

    AT_MOST_ONCE = "at_most_once"
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


# ---------------------------------------------------------------- bridge section


class AdminTls(Model):
    """Serve the admin endpoint over HTTPS."""

    cert_file: str
    key_file: str


def _token_not_empty(token: SecretStr) -> SecretStr:
    if not token.get_secret_value():
        raise ValueError("an empty token would turn authentication off: leave `token` out for that")
    return token


class Admin(Model):
    """The admin HTTP endpoint: health, readiness, metrics and the routes view."""

    enabled: bool = True
    listen: str = Field(
        "127.0.0.1:7777",
        pattern=r"^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]*):\d{1,5}$",
        description="host:port; loopback by default",
    )
    token: Annotated[SecretStr, AfterValidator(_token_not_empty)] | None = Field(
        None, description="Bearer token required on all but /healthz"
    )
    tls: AdminTls | None = None
    max_connections: int = Field(
        32, ge=1, le=1024, description="Connections served at once; more are closed at once"
    )
    request_timeout: Seconds = Field(
        10.0, gt=0, le=300, description="Bound on the TLS handshake and on reading a request"
    )


DEFAULT_BUFFER_MAX_MSGS = 1_000_000
DEFAULT_BUFFER_MAX_BYTES = 1024**3  # 1 GiB


class BufferLimits(Model):
    """How much a route's buffer holds before the route stops taking from its source."""

    max_msgs: int = Field(
        DEFAULT_BUFFER_MAX_MSGS, ge=1, le=2**53, description="Messages waiting for delivery"
    )
    max_bytes: Bytes = Field(
        DEFAULT_BUFFER_MAX_BYTES,
        ge=1,
        le=2**53,
        description="Bytes (subject, headers, payload) waiting for delivery",
    )


class BufferMode(StrEnum):
    """Where a route's messages rest between the source's ack and the sink's confirm."""

    EMBEDDED = "embedded"  # the bridge's own SQLite file in data_dir (one process owns it)
    JETSTREAM = "jetstream"  # a stream in a NATS (cluster) that every replica shares
    NONE = "none"  # no copy: the source is settled only once the sink confirmed


_JETSTREAM_ONLY = ("connection", "replicas", "ack_wait")


def _also_a_mode_name(schema: dict[str, Any]) -> None:
    """The schema of `Buffer`, which may also be written as a mode's name alone."""
    mapping = dict(schema)
    schema.clear()
    schema["anyOf"] = [{"type": "string", "enum": [m.value for m in BufferMode]}, mapping]


class Buffer(BufferLimits):
    """A route's buffer: its mode (or a mapping with `mode`), its limits and its stream.

    `buffer: jetstream` is short for `buffer: {mode: jetstream}`. `bridge.buffer` is every
    route's default; a route's `buffer` overrides the keys it writes (bridge.config.model
    effective_buffer).
    """

    model_config = ConfigDict(json_schema_extra=_also_a_mode_name)

    mode: BufferMode = Field(BufferMode.EMBEDDED, description="embedded, jetstream or none")
    connection: Name | None = Field(
        None, description="jetstream: the NATS connection (of this file) holding the streams"
    )
    replicas: int = Field(
        3, ge=1, le=5, description="jetstream: copies of each stream in the NATS cluster"
    )
    ack_wait: Seconds = Field(
        30.0,
        gt=0,
        le=3600,
        description="jetstream: a dead replica's taken messages are delivered again after this",
    )

    @model_validator(mode="before")
    @classmethod
    def _mode_name(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _keys_of_its_mode(self) -> Buffer:
        if self.mode is not BufferMode.JETSTREAM and "mode" in self.model_fields_set:
            written = [key for key in _JETSTREAM_ONLY if key in self.model_fields_set]
            if written:
                raise ValueError(f"{written[0]} is a key of mode jetstream, not {self.mode}")
        return self


def effective_buffer(default: Buffer, written: Buffer | None) -> Buffer:
    """A route's buffer: `default` (bridge.buffer) with the keys the route `written` sets."""
    if written is None:
        return default
    merged = default.model_dump() | written.model_dump(include=written.model_fields_set)
    if merged["mode"] != BufferMode.JETSTREAM:  # the default's stream settings do not apply
        merged = {key: value for key, value in merged.items() if key not in _JETSTREAM_ONLY}
    return Buffer.model_validate(merged)


class BridgeSettings(Model):
    """This bridge process."""

    id: Name = Field(description="Names this bridge in loop-prevention headers")
    data_dir: str = Field("./natsbridge-data", description="Where the embedded buffer lives")
    admin: Admin = Admin()
    drain_timeout: Seconds = Field(30.0, gt=0, description="Grace period on SIGTERM")
    hop_limit: int = Field(
        8, ge=1, le=255, description="Drop a message that crossed this many bridges"
    )
    buffer: Buffer = Field(Buffer(), description="Every route's, unless it sets its own")


# ---------------------------------------------------------------- connections


class Tls(Model):
    """TLS client settings; files are PEM."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True

    @model_validator(mode="after")
    def _key_has_a_certificate(self) -> Tls:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file (the client certificate it belongs to)")
        return self


# ---------------------------------------------------------------- routes and file


class RequestReply(Model):
    """Bridge requests and carry the answer back to the requester's reply address."""

    timeout: Seconds = Field(5.0, gt=0)


class Retry(Model):
    """Exponential back-off with jitter for retryable errors."""

    initial: Seconds = Field(0.1, gt=0)
    max: Seconds = Field(30.0, gt=0)
    multiplier: float = Field(2.0, ge=1, le=100)
    poison_after: int = Field(3, ge=1, le=100)
    """Connection losses a message may cause, sent alone each time, before it is dead-lettered."""


class RouteSpec(Model):
    """A route as written; `from`/`to` are checked against their connection's kind."""

    name: Name
    from_: dict[str, Any] = Field(alias="from")
    to: dict[str, Any]
    delivery: Delivery = Delivery.AT_LEAST_ONCE
    request_reply: RequestReply | None = None
    max_in_flight: int = Field(1000, ge=1, le=100_000)
    retry: Retry = Retry()
    max_payload: Bytes | None = Field(None, gt=0, le=64 * 1024**2)
    buffer: Buffer | None = Field(None, description="Overrides the keys of bridge.buffer it writes")


class ConfigFile(Model):
    """The whole file, version 1."""

    version: Literal[1]
    bridge: BridgeSettings
    connections: dict[Name, dict[str, Any]] = Field(min_length=1)
    routes: list[RouteSpec] = Field(
        default_factory=list, description="May be empty when `migrations` is not"
    )
    migrations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Flows moving to NATS in phases (bridge.migrate.model.MigrationSpec)",
    )
