"""The STOMP connector's config: its connection, `from:` and `to:` models.

Validated by the core's config loader, which asks the kind (connectors/stomp/kind.py) which
model a route endpoint of this kind takes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr

from natsbridge.bridge.config.model import Endpoint, Model, Template, Tls, url_with_scheme
from natsbridge.bridge.config.units import Seconds

StompUrl = Annotated[str, url_with_scheme("stomp", "stomp+ssl")]


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


class StompSource(Endpoint):
    """Subscribe to a STOMP destination with client-individual acks."""

    destination: str = Field(pattern=r"^/", description="/queue/x, /topic/x.>, /exchange/x/rk …")
    subscription: str | None = Field(
        None, description="Durable subscription name for topics; default natsbridge-<route>"
    )
    durable: bool = True


class StompSink(Endpoint):
    """SEND to a STOMP destination, confirmed by a RECEIPT."""

    destination: Template
    persistent: bool = True
