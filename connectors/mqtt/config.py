"""The MQTT connector's config: its connection, `from:` and `to:` models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator

from natsbridge.connectors.mqtt.topics import validate_filter
from natsbridge.sdk import Endpoint, MappingError, Model, Seconds, Template, Tls, url_with_scheme

MqttUrl = Annotated[str, url_with_scheme("mqtt", "mqtts")]
Qos = Literal[0, 1]


def _protocol_text(value: Any) -> Any:
    """YAML reads ``protocol: 5`` as a number and ``3.1.1`` as text: accept both."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _topic_filter(topic_filter: str) -> str:
    try:
        validate_filter(topic_filter)
    except MappingError as exc:
        raise ValueError(str(exc)) from None
    if topic_filter.startswith("$share/"):
        raise ValueError("shared subscriptions ($share/...) are not supported")
    return topic_filter


class MqttConnection(Model):
    """An MQTT 3.1.1 or 5 broker (Mosquitto, EMQX, HiveMQ ...)."""

    kind: Literal["mqtt"]
    url: MqttUrl = Field(description="mqtt://host:port (1883) or mqtts://host:port (8883, TLS)")
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Fixed client id prefix (persistent sessions); default natsbridge-<bridge id>",
    )
    protocol: Annotated[Literal["3.1.1", "5"], BeforeValidator(_protocol_text)] = "5"
    username: str | None = None
    password: SecretStr | None = None
    keepalive: Seconds = Field(30.0, ge=1, le=65535, description="PINGREQ interval")
    connect_timeout: Seconds = Field(10.0, gt=0)
    session_expiry: Seconds = Field(
        7 * 86400.0,
        ge=0,
        description="MQTT 5: how long the broker keeps a source's session while it is away",
    )
    tls: Tls | None = None

    @model_validator(mode="after")
    def _password_has_a_user(self) -> MqttConnection:
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        return self


class MqttSource(Endpoint):
    """Subscribe to MQTT topic filters through a persistent session."""

    topics: list[Annotated[str, AfterValidator(_topic_filter)]] = Field(
        min_length=1, description='Topic filters, "+" one level, "#" the rest'
    )
    qos: Qos = Field(1, description="1: at least once (PUBACK after the buffer commit)")


class MqttSink(Endpoint):
    """Publish to an MQTT topic; QoS 1 is confirmed by the broker's PUBACK."""

    topic: Template
    qos: Qos = 1
    retain: bool = False
