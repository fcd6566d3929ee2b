"""The RabbitMQ (AMQP 0-9-1) connector's config: its connection, `from:` and `to:` models.

Validated by the core's config loader, which asks the kind (connectors/amqp/kind.py) which
model a route endpoint of this kind takes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from natsbridge.bridge.config.model import Endpoint, Model, Template, Tls, url_with_scheme
from natsbridge.bridge.config.units import Seconds

AmqpUrl = Annotated[str, url_with_scheme("amqp", "amqps")]


class AmqpConnection(Model):
    """A RabbitMQ (AMQP 0-9-1) broker."""

    kind: Literal["amqp"]
    url: AmqpUrl = Field(description="amqp://user:pass@host:port/vhost (%2F is vhost /)")
    heartbeat: Seconds = Field(30.0, ge=0)
    connect_timeout: Seconds = Field(10.0, gt=0)
    tls: Tls | None = None


class AmqpSource(Endpoint):
    """Consume from a RabbitMQ queue, or from an exchange through the bridge's own queue."""

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


class AmqpSink(Endpoint):
    """Publish to a RabbitMQ exchange with publisher confirms."""

    exchange: str = Field(description='"" is the default exchange')
    routing_key: Template
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = "topic"
    declare: bool = Field(True, description="Declare the exchange (durable) if missing")
    mandatory: bool = Field(True, description="Unroutable messages are errors, not dropped")
    persistent: bool = True
