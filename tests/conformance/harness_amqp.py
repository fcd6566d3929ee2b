"""The `amqp` connector on RabbitMQ: an exchange per test; the source binds its own queue."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import pika

from natsbridge.bridge.envelope import Envelope
from tests.conformance.harness import Harness, Native, Reader
from tests.e2e.hostile import Case, Message, amqp_cases, common_cases, produce_amqp

KEY = "ok.rk"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _QueueReader(Reader):
    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue

    def _read(self, count: int, timeout: float) -> list[Native]:
        out: list[Native] = []
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            channel = connection.channel()
            deadline = time.monotonic() + timeout
            while len(out) < count and time.monotonic() < deadline:
                method, properties, body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    connection.sleep(0.05)
                    continue
                headers = properties.headers or {}
                out.append(Native(body, tuple((k, _text(v)) for k, v in headers.items())))
        finally:
            connection.close()
        return out

    async def read(self, count: int, timeout: float = 15.0) -> list[Native]:
        return await asyncio.to_thread(self._read, count, timeout)


class AmqpHarness(Harness):
    """Source: exchange + binding `#` (queue natsbridge.<route>); sink: the same exchange."""

    id = "amqp"
    kind = "amqp"
    fixture = "amqp_url"
    mark = "amqp"
    multi_values = (
        "an AMQP table holds one value per name: the sink writes several as an array, "
        "which the source gives back as one JSON value"
    )

    def connection(self) -> dict[str, Any]:
        return {"kind": "amqp", "url": self.endpoint, "heartbeat": "10s"}

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        connection = pika.BlockingConnection(pika.URLParameters(self.endpoint))
        return connection, connection.channel()

    async def new_address(self) -> str:
        address = f"{self.name}-{len(self.cleanups)}"
        self.cleanups.append(("exchange", address))
        return address

    def source(self, address: str) -> dict[str, Any]:
        self.cleanups.append(("queue", f"natsbridge.{self.route_name(address)}"))
        return {"exchange": address, "binding_keys": ["#"]}

    def sink(self, address: str) -> dict[str, Any]:
        return {"exchange": address, "routing_key": KEY}

    def target(self, address: str) -> str:
        return KEY

    async def produce(self, address: str, messages: Sequence[Native]) -> None:
        def publish() -> None:
            connection, channel = self._channel()
            try:
                channel.confirm_delivery()
                for m in messages:
                    properties = pika.BasicProperties(
                        delivery_mode=2, headers=dict(m.headers) or None
                    )
                    channel.basic_publish(address, KEY, m.payload, properties, mandatory=True)
            finally:
                connection.close()

        await asyncio.to_thread(publish)

    async def reader(self, address: str) -> Reader:
        queue = f"{address}.observer"

        def bind() -> None:
            connection, channel = self._channel()
            try:
                channel.exchange_declare(address, exchange_type="topic", durable=True)
                channel.queue_declare(queue, durable=True)
                channel.queue_bind(queue, address, routing_key="ok.#")
            finally:
                connection.close()

        await asyncio.to_thread(bind)
        self.cleanups.append(("queue", queue))
        return _QueueReader(self.endpoint, queue)

    def refused(self, address: str) -> tuple[Envelope, str]:
        envelope = Envelope(subject="nowhere.rk", payload=b"unroutable")
        return envelope, "unroutable (mandatory) routing key"

    def hostile_cases(self) -> list[Case]:
        return common_cases(self.name) + amqp_cases(self.name)

    async def produce_hostile(self, address: str, batch: Sequence[Message]) -> dict[str, str]:
        return await asyncio.to_thread(produce_amqp, self.endpoint, address, batch)

    def ports(self) -> set[int]:
        return {urlsplit(self.endpoint).port or 5672}

    async def cleanup(self) -> None:
        def delete() -> None:
            connection, channel = self._channel()
            try:
                for what, name in self.cleanups:
                    with contextlib.suppress(Exception):
                        if what == "queue":
                            channel.queue_delete(name)
                        else:
                            channel.exchange_delete(name)
            finally:
                connection.close()

        with contextlib.suppress(Exception):
            await asyncio.to_thread(delete)


class AmqpQueueHarness(AmqpHarness):
    """Source: a named queue (`queue: <address>`), bound `ok.#` to the exchange the rest use."""

    id = "amqp-queue"

    async def new_address(self) -> str:
        address = await super().new_address()

        def declare() -> None:
            connection, channel = self._channel()
            try:
                channel.exchange_declare(address, exchange_type="topic", durable=True)
                channel.queue_declare(address, durable=True)
                channel.queue_bind(address, address, routing_key="ok.#")
            finally:
                connection.close()

        await asyncio.to_thread(declare)
        self.cleanups.append(("queue", address))
        return address

    def source(self, address: str) -> dict[str, Any]:
        return {"queue": address}
