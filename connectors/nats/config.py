"""The NATS connector's config: its connection, `from:` and `to:` models.

Validated by the core's config loader, which asks the kind (connectors/nats/kind.py) which
model a route endpoint of this kind takes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr

from natsbridge.bridge.config.model import (
    Endpoint,
    JsName,
    Model,
    Template,
    Tls,
    url_with_scheme,
)
from natsbridge.bridge.config.units import Age, Bytes, Seconds

NatsUrl = Annotated[str, url_with_scheme("nats", "tls", "ws", "wss")]


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


class StreamSettings(Model):
    """How the bridge creates a missing stream; those set are compared with an existing one."""

    replicas: int = Field(1, ge=1, le=5, description="num_replicas (a cluster needs >= that)")
    storage: Literal["file", "memory"] = "file"
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    max_msgs: int | None = Field(None, ge=1, description="Default: unlimited")
    max_bytes: Bytes | None = Field(None, description="Default: unlimited")
    max_age: Age | None = Field(None, description="Default: unlimited (a duration: 24h)")
    discard: Literal["old", "new"] = Field("old", description="At a limit: drop old or refuse")


STREAM_SETTINGS = tuple(StreamSettings.model_fields)
"""The stream settings keys, in config order."""


class JetStreamSource(StreamSettings):
    """Consume a JetStream stream through a durable pull consumer."""

    stream: JsName
    durable: JsName | None = Field(None, description="Consumer name; default natsbridge-<route>")
    create: bool = Field(True, description="Create the stream/consumer if missing")
    ack_wait: Seconds = Field(30.0, gt=0)
    max_deliver: int = Field(5, ge=1)


class NatsSource(Endpoint):
    """Subscribe to a core NATS subject pattern, or consume a JetStream stream."""

    subject: str
    queue_group: str | None = Field(
        None, description="Core NATS queue group; default natsbridge-<bridge id>-<route>"
    )
    jetstream: JetStreamSource | None = None


class JetStreamSink(StreamSettings):
    """Publish into a JetStream stream and wait for its PubAck."""

    stream: JsName
    create: bool = Field(True, description="Create the stream if missing")
    subjects: list[str] | None = Field(None, description="Default: derived from to.subject")
    duplicate_window: Seconds = Field(120.0, gt=0)


class NatsSink(Endpoint):
    """Publish to a NATS subject, core or JetStream."""

    subject: Template
    jetstream: JetStreamSink | None = None
