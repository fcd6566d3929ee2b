"""The `stomp` connector, once per dialect: ActiveMQ Classic and RabbitMQ's STOMP plugin."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import stomp  # type: ignore[import-untyped]

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
        headers = [(b"destination", destination.encode()), (b"id", b"1"), (b"ack", b"auto")]
        # A topic keeps nothing for a subscriber yet to come: wait until the broker has it.
        client.write(b"SUBSCRIBE", [*headers, (b"receipt", b"subscribed")])
        while client.read(30)[0] != b"RECEIPT":
            pass

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

    def prefix(self, address: str) -> str:
        """Where the address's messages go: `<prefix>.ok` and, for hostile cases, `<prefix>.x`."""
        return f"/queue/{address}"

    def destination(self, address: str) -> str:
        return f"{self.prefix(address)}.ok"

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
        prefix = self.prefix(address)
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


def _drop_durable(harness: StompHarness, destination: str, name: str) -> None:
    """Remove durable subscription `name` (best effort, bounded): reruns leave nothing behind."""
    done = threading.Event()

    class Done(stomp.ConnectionListener):  # type: ignore[misc]
        def on_receipt(self, frame: Any) -> None:
            done.set()

        def on_error(self, frame: Any) -> None:
            done.set()

    parts = urlsplit(harness.endpoint)
    conn = stomp.Connection12([(parts.hostname, parts.port)], vhost="/", auto_decode=False)
    conn.set_listener("done", Done())
    login, passcode = harness.credentials()
    try:
        if harness.dialect == "activemq":
            conn.connect(login, passcode, wait=True, headers={"client-id": name})
            conn.unsubscribe(name, headers={"activemq.subscriptionName": name, "receipt": "x"})
        else:
            conn.connect(login, passcode, wait=True)
            durable = {"durable": "true", "auto-delete": "false", "x-queue-name": name}
            conn.subscribe(destination, id=name, ack="auto", headers=durable)
            conn.unsubscribe(name, headers={**durable, "receipt": "x"})
        done.wait(5)
    except Exception:  # cleanup only: never hide the test's own outcome
        pass
    finally:
        with contextlib.suppress(Exception):
            conn.disconnect()


class _TopicHarness(StompHarness):
    """A durable wildcard topic subscription (`/topic/<address>.>` or `.#`) as the source;
    producer, sink and reader use the topic `/topic/<address>.ok` under it."""

    wildcard: ClassVar[str]

    def prefix(self, address: str) -> str:
        return f"/topic/{address}"

    def source(self, address: str) -> dict[str, Any]:
        return {"destination": f"/topic/{address}.{self.wildcard}"}

    async def cleanup(self) -> None:
        for address in self.cleanups:
            name = f"natsbridge-{self.route_name(address)}"  # the source's default subscription
            destination = self.source(address)["destination"]
            await asyncio.to_thread(_drop_durable, self, destination, name)


class ActiveMqTopicHarness(_TopicHarness, ActiveMqHarness):
    id = "stomp-activemq-topic"
    wildcard = ">"


class RabbitMqStompTopicHarness(_TopicHarness, RabbitMqStompHarness):
    id = "stomp-rabbitmq-topic"
    wildcard = "#"
