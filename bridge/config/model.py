"""Version 1 of the config file format, declared once: validation, defaults and JSON Schema.

A file has three sections: `bridge` (this bridge's id, data dir and admin endpoint),
`connections` (named brokers, each with a `kind`) and `routes` (each `from` one
connection `to` another, with a delivery guarantee). A route's `from` and `to` take the
fields of the connection kind they name: see the *Source and *Sink models below.
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


def _url_with_scheme(*schemes: str) -> AfterValidator:
    """Check a URL's scheme after interpolation (the schema cannot: values may be `${env:…}`)."""

    def check(url: str) -> str:
        if not url.startswith(tuple(f"{s}://" for s in schemes)):
            expected = " or ".join(f"{s}://" for s in schemes)
            raise ValueError(f"expected a URL starting with {expected}")
        return url

    return AfterValidator(check)


AmqpUrl = Annotated[str, _url_with_scheme("amqp", "amqps")]
StompUrl = Annotated[str, _url_with_scheme("stomp", "stomp+ssl")]
NatsUrl = Annotated[str, _url_with_scheme("nats", "tls", "ws", "wss")]

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


class BridgeSettings(Model):
    """This bridge process."""

    id: Name = Field(description="Names this bridge in loop-prevention headers")
    data_dir: str = Field("./natsbridge-data", description="Where the embedded buffer lives")
    admin: Admin = Admin()
    drain_timeout: Seconds = Field(30.0, gt=0, description="Grace period on SIGTERM")
    hop_limit: int = Field(
        8, ge=1, le=255, description="Drop a message that crossed this many bridges"
    )
    buffer: BufferLimits = Field(
        BufferLimits(), description="Every route's, unless it sets its own"
    )


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


class AmqpConnection(Model):
    """A RabbitMQ (AMQP 0-9-1) broker."""

    kind: Literal["amqp"]
    url: AmqpUrl = Field(description="amqp://user:pass@host:port/vhost (%2F is vhost /)")
    heartbeat: Seconds = Field(30.0, ge=0)
    connect_timeout: Seconds = Field(10.0, gt=0)
    tls: Tls | None = None


class KafkaConnection(Model):
    """An Apache Kafka cluster."""

    kind: Literal["kafka"]
    bootstrap_servers: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    client_id: str = "natsbridge"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    tls: Tls | None = None

    @model_validator(mode="after")
    def _sasl_is_complete(self) -> KafkaConnection:
        uses_sasl = self.security_protocol.startswith("SASL_")
        if uses_sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password"
            )
        if not uses_sasl and self.sasl_mechanism:
            raise ValueError("sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL")
        if self.tls is not None and self.security_protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(
                f"tls needs security_protocol SSL or SASL_SSL, not {self.security_protocol}"
            )
        return self


class StompConnection(Model):
    """A STOMP 1.2 broker: ActiveMQ Classic or RabbitMQ's STOMP plugin."""

    kind: Literal["stomp"]
    url: StompUrl = Field(description="stomp://host:port or stomp+ssl://host:port")
    dialect: Literal["activemq", "rabbitmq"]
    login: str | None = None
    passcode: SecretStr | None = None
    vhost: str | None = Field(None, description="STOMP `host` header (RabbitMQ virtual host)")
    heartbeat: Seconds = Field(10.0, ge=0, description="Heart-beat interval both ways; 0 = off")
    tls: Tls | None = None


class NatsConnection(Model):
    """A NATS server or cluster, with or without JetStream."""

    kind: Literal["nats"]
    servers: list[NatsUrl] = Field(min_length=1)
    name: str = "natsbridge"
    token: SecretStr | None = None
    user: str | None = None
    password: SecretStr | None = None
    nkey_seed_file: str | None = None
    creds_file: str | None = None
    tls: Tls | None = None


Connection = AmqpConnection | KafkaConnection | StompConnection | NatsConnection
CONNECTION_MODELS: dict[str, type[Model]] = {
    "amqp": AmqpConnection,
    "kafka": KafkaConnection,
    "stomp": StompConnection,
    "nats": NatsConnection,
}


# ---------------------------------------------------------------- route endpoints


class AmqpSource(Model):
    """Consume from a RabbitMQ queue, or from an exchange through the bridge's own queue."""

    connection: Name
    queue: str | None = Field(None, description="Consume this queue (declared durable if missing)")
    exchange: str | None = Field(None, description="Bind queue natsbridge.<route> to this exchange")
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = "topic"
    binding_keys: list[str] = Field(default_factory=lambda: ["#"])
    prefetch: int | None = Field(None, ge=1, le=65535, description="Default: route max_in_flight")

    @model_validator(mode="after")
    def _queue_or_exchange(self) -> AmqpSource:
        if self.queue is None and self.exchange is None:
            raise ValueError("an amqp source needs 'queue' or 'exchange'")
        return self


class KafkaSource(Model):
    """Consume Kafka topics through a consumer group."""

    connection: Name
    topics: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]] | None = None
    topic_pattern: str | None = Field(None, description="Regular expression of topic names")
    group_id: str | None = Field(None, description="Default: natsbridge-<route>")
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"

    @model_validator(mode="after")
    def _topics_or_pattern(self) -> KafkaSource:
        if bool(self.topics) == bool(self.topic_pattern):
            raise ValueError("a kafka source needs exactly one of 'topics' or 'topic_pattern'")
        return self


class StompSource(Model):
    """Subscribe to a STOMP destination with client-individual acks."""

    connection: Name
    destination: str = Field(pattern=r"^/", description="/queue/x, /topic/x.>, /exchange/x/rk …")
    subscription: str | None = Field(
        None, description="Durable subscription name for topics; default natsbridge-<route>"
    )
    durable: bool = True


class JetStreamSource(Model):
    """Consume a JetStream stream through a durable pull consumer."""

    stream: JsName
    durable: JsName | None = Field(None, description="Consumer name; default natsbridge-<route>")
    create: bool = Field(True, description="Create the stream/consumer if missing")
    ack_wait: Seconds = Field(30.0, gt=0)
    max_deliver: int = Field(5, ge=1)


class NatsSource(Model):
    """Subscribe to a core NATS subject pattern, or consume a JetStream stream."""

    connection: Name
    subject: str
    queue_group: str | None = None
    jetstream: JetStreamSource | None = None


class AmqpSink(Model):
    """Publish to a RabbitMQ exchange with publisher confirms."""

    connection: Name
    exchange: str = Field(description='"" is the default exchange')
    routing_key: Template
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = "topic"
    declare: bool = Field(True, description="Declare the exchange (durable) if missing")
    mandatory: bool = Field(True, description="Unroutable messages are errors, not dropped")
    persistent: bool = True


class KafkaTopicCreation(Model):
    """How to create a missing Kafka topic."""

    partitions: int = Field(1, ge=1)
    replication_factor: int = Field(1, ge=1)


class KafkaSink(Model):
    """Produce to Kafka with acks=all."""

    connection: Name
    topic: Template
    key: Template | None = None
    partition: int | None = Field(None, ge=0, description="Default: Kafka's partitioner by key")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    create_topic: KafkaTopicCreation | None = None


class StompSink(Model):
    """SEND to a STOMP destination, confirmed by a RECEIPT."""

    connection: Name
    destination: Template
    persistent: bool = True


class JetStreamSink(Model):
    """Publish into a JetStream stream and wait for its PubAck."""

    stream: JsName
    create: bool = Field(True, description="Create the stream if missing")
    subjects: list[str] | None = Field(None, description="Default: derived from to.subject")
    duplicate_window: Seconds = Field(120.0, gt=0)


class NatsSink(Model):
    """Publish to a NATS subject, core or JetStream."""

    connection: Name
    subject: Template
    jetstream: JetStreamSink | None = None


SOURCE_MODELS: dict[str, type[Model]] = {
    "amqp": AmqpSource,
    "kafka": KafkaSource,
    "stomp": StompSource,
    "nats": NatsSource,
}
SINK_MODELS: dict[str, type[Model]] = {
    "amqp": AmqpSink,
    "kafka": KafkaSink,
    "stomp": StompSink,
    "nats": NatsSink,
}
Source = AmqpSource | KafkaSource | StompSource | NatsSource
Sink = AmqpSink | KafkaSink | StompSink | NatsSink


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
    buffer: BufferLimits | None = Field(None, description="Default: bridge.buffer")


class ConfigFile(Model):
    """The whole file, version 1."""

    version: Literal[1]
    bridge: BridgeSettings
    connections: dict[Name, dict[str, Any]] = Field(min_length=1)
    routes: list[RouteSpec] = Field(min_length=1)
