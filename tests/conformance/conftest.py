"""The connectors that opt into the conformance suite: one `Harness` class each, listed here."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.harness import Harness
from tests.conformance.harness_amqp import AmqpHarness, AmqpQueueHarness
from tests.conformance.harness_kafka import KafkaHarness
from tests.conformance.harness_mqtt import MqttHarness
from tests.conformance.harness_nats import CoreNatsHarness, JetStreamHarness
from tests.conformance.harness_stomp import (
    ActiveMqHarness,
    ActiveMqTopicHarness,
    RabbitMqStompHarness,
    RabbitMqStompTopicHarness,
)
from tests.connectors import mqtt_helpers

HARNESSES: list[type[Harness]] = [
    AmqpHarness,
    AmqpQueueHarness,
    KafkaHarness,
    ActiveMqHarness,
    RabbitMqStompHarness,
    ActiveMqTopicHarness,
    RabbitMqStompTopicHarness,
    CoreNatsHarness,
    JetStreamHarness,
    MqttHarness,
]


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    """mqtt://host:port of Mosquitto (NATSBRIDGE_MQTT_URL): skips without one, fails under CI."""
    return mqtt_helpers.mqtt_url()


@pytest.fixture(
    params=[pytest.param(h, id=h.id, marks=getattr(pytest.mark, h.mark)) for h in HARNESSES]
)
def harness(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> Iterator[Harness]:
    """Each conformance test runs once per harness, on that harness's real broker."""
    cls: type[Harness] = request.param
    endpoint = request.getfixturevalue(cls.fixture)  # skips or fails as the broker fixtures do
    made = cls(endpoint, tmp_path, unique_name)
    yield made
    asyncio.run(made.cleanup())
