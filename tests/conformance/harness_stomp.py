"""The `stomp` connector, once per dialect: ActiveMQ Classic and RabbitMQ's STOMP plugin."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from natsbridge.bridge.envelope import Envelope
from tests.conformance.harness import Harness, Native, Reader
from tests.e2e.hostile import (
    Case,
    Message,
    RawStomp,
    common_cases,
    produce_stomp,
    stomp_unsendable,
)

FRAME_HEADERS = frozenset({"destination", "message-id", "subscription", "content-length", "ack"})


def _unescape(value: bytes) -> str:
    escapes = {b"n": b"\n", b"r": b"\r", b"c": b":", b"\\": b"\\"}
    out, i = b"", 0
    while i < len(value):
        if value[i : i + 1] == b"\\" and value[i + 1 : i + 2] in escapes:
            out += escapes[value[i + 1 : i + 2]]
            i += 2
        else:
            out += value[i : i + 1]
            i += 1
    return out.decode()


class _QueueReader(Reader):
    """One auto-ack subscription, kept open: frames the broker pushed are not lost between reads."""

    def __init__(self, client: RawStomp, destination: str) -> None:
        self.client = client
        client.write(
            b"SUBSCRIBE", [(b"destination", destination.encode()), (b"id", b"1"), (b"ack", b"auto")]
        )

    def _read(self, count: int, timeout: float) -> list[Native]:
        out: list[Native] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                command, headers, body = self.client.read(left)
            except TimeoutError:
                break
            if command == b"MESSAGE":
                pairs = tuple((_unescape(n), _unescape(v)) for n, v in headers)
                out.append(Native(body, pairs))
        return out

    async def read(self, count: int, timeout: float = 15.0) -> list[Native]:
        return await asyncio.to_thread(self._read, count, timeout)

    async def close(self) -> None:
        self.client.close()


class StompHarness(Harness):
    """A queue per address (`/queue/<address>.ok`), for source and sink alike."""

    kind = "stomp"
    mark = "stomp"
    dialect: ClassVar[str]
    multi_values = "STOMP 1.2: of a repeated header only the first is significant"

    def credentials(self) -> tuple[str, str]:
        raise NotImplementedError

    def connection(self) -> dict[str, Any]:
        login, passcode = self.credentials()
        return {
            "kind": "stomp",
            "url": self.endpoint,
            "dialect": self.dialect,
            "login": login,
            "passcode": passcode,
        }

    async def new_address(self) -> str:
        address = f"{self.name}-{len(self.cleanups)}"
        self.cleanups.append(address)
        return address

    def destination(self, address: str) -> str:
        return f"/queue/{address}.ok"

    def source(self, address: str) -> dict[str, Any]:
        return {"destination": self.destination(address)}

    def sink(self, address: str) -> dict[str, Any]:
        return {"destination": self.destination(address)}

    def target(self, address: str) -> str:
        return self.destination(address)

    async def produce(self, address: str, messages: Sequence[Native]) -> None:
        def send() -> None:
            client = RawStomp(self.endpoint, *self.credentials())
            try:
                for m in messages:
                    headers = [(n.encode(), v.encode()) for n, v in m.headers]
                    error = client.send(self.destination(address).encode(), headers, m.payload)
                    assert error is None, error
            finally:
                client.close()

        await asyncio.to_thread(send)

    async def reader(self, address: str) -> Reader:
        client = await asyncio.to_thread(RawStomp, self.endpoint, *self.credentials())
        return _QueueReader(client, self.destination(address))

    def refused(self, address: str) -> tuple[Envelope, str]:
        envelope = Envelope(
            subject=self.destination(address), payload=b"nul", headers={"X-Nul": ["a\x00b"]}
        )
        return envelope, "a NUL in a header value (STOMP 1.2 has no escape for it)"

    def hostile_cases(self) -> list[Case]:
        # Destination cases go elsewhere than the source's queue: tests/e2e covers them.
        return [
            case
            for case in common_cases(self.name)
            if stomp_unsendable(case) is None and case.address is None
        ]

    async def produce_hostile(self, address: str, batch: Sequence[Message]) -> dict[str, str]:
        login, passcode = self.credentials()
        prefix = f"/queue/{address}"
        return await asyncio.to_thread(produce_stomp, self.endpoint, login, passcode, prefix, batch)

    def ports(self) -> set[int]:
        return {urlsplit(self.endpoint).port or 61613}


class ActiveMqHarness(StompHarness):
    id = "stomp-activemq"
    fixture = "stomp_activemq_url"
    dialect = "activemq"

    def credentials(self) -> tuple[str, str]:
        return (
            os.environ.get("NATSBRIDGE_STOMP_ACTIVEMQ_USER", "admin"),
            os.environ.get("NATSBRIDGE_STOMP_ACTIVEMQ_PASSWORD", "admin"),
        )


class RabbitMqStompHarness(StompHarness):
    id = "stomp-rabbitmq"
    fixture = "stomp_rabbitmq_url"
    dialect = "rabbitmq"

    def credentials(self) -> tuple[str, str]:
        return ("guest", "guest")
