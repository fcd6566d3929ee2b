"""The `nats` connector, core and JetStream, on the shared nats-server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.msg import Msg

from natsbridge.bridge.envelope import Envelope
from tests.conformance.harness import Harness, Native, Reader
from tests.e2e.hostile import (
    Case,
    Message,
    _header_block,
    common_cases,
    nats_cases,
    nats_unsendable,
    produce_nats,
)


def _header_lines(encoded: str | None) -> tuple[tuple[str, str], ...]:
    """Headers of a stored message, every value kept (nats-py's parser keeps the last one and
    turns non-ASCII values into email Header objects)."""
    if not encoded:
        return ()
    lines = base64.b64decode(encoded).decode().split("\r\n")[1:]
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return tuple((name, value.strip()) for name, value in pairs)


def _native(msg: Msg) -> Native:
    return Native(msg.data, tuple((msg.headers or {}).items()))


class _SubscriptionReader(Reader):
    def __init__(self, nc: nats.NATS, subject: str) -> None:
        self.nc = nc
        self.queue: asyncio.Queue[Native] = asyncio.Queue()
        self.subject = subject

    async def start(self) -> None:
        async def on_msg(msg: Msg) -> None:
            self.queue.put_nowait(_native(msg))

        await self.nc.subscribe(self.subject, cb=on_msg)
        await self.nc.flush()

    async def read(self, count: int, timeout: float = 15.0) -> list[Native]:
        out: list[Native] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while len(out) < count:
                    out.append(await self.queue.get())
        return out

    async def close(self) -> None:
        await self.nc.close()


class _StreamReader(Reader):
    def __init__(self, nc: nats.NATS, stream: str) -> None:
        self.nc, self.stream, self.next_seq = nc, stream, 1

    async def read(self, count: int, timeout: float = 15.0) -> list[Native]:
        out: list[Native] = []
        jsm = self.nc.jsm()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count and loop.time() < deadline:
            try:
                msg = await jsm.get_msg(self.stream, self.next_seq)
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.05)  # not written yet (or the stream not yet made)
                continue
            self.next_seq += 1
            out.append(Native(msg.data or b"", _header_lines(msg.hdrs)))
        return out

    async def close(self) -> None:
        await self.nc.close()


class CoreNatsHarness(Harness):
    """Subjects `<address>.>` (source) and `<address>.ok` (sink)."""

    id = "nats-core"
    kind = "nats"
    fixture = "nats_url"
    mark = "nats"
    redelivery = "core NATS cannot redeliver: acks are no-ops, nothing is kept for a reopen"
    renames_reserved = "a NATS source drops JetStream publish directives instead"

    def connection(self) -> dict[str, Any]:
        return {"kind": "nats", "servers": [self.endpoint]}

    async def new_address(self) -> str:
        return f"conf.{uuid.uuid4().hex}"

    def source(self, address: str) -> dict[str, Any]:
        return {"subject": f"{address}.>"}

    def sink(self, address: str) -> dict[str, Any]:
        return {"subject": f"{address}.ok"}

    def target(self, address: str) -> str:
        return f"{address}.ok"

    async def produce(self, address: str, messages: Sequence[Native]) -> None:
        nc = await nats.connect(self.endpoint)
        try:
            for m in messages:
                await nc.publish(f"{address}.ok", m.payload, headers=dict(m.headers) or None)
            await nc.flush()
        finally:
            await nc.close()

    async def reader(self, address: str) -> Reader:
        reader = _SubscriptionReader(await nats.connect(self.endpoint), f"{address}.ok")
        await reader.start()
        return reader

    def refused(self, address: str) -> tuple[Envelope, str]:
        envelope = Envelope(subject=f"{address}.ok", payload=b"x" * (2 * 1024 * 1024))
        return envelope, "a payload over the route's max_payload (1 MiB)"

    def hostile_cases(self) -> list[Case]:
        cases = common_cases(self.name) + nats_cases()
        return [case for case in cases if nats_unsendable(case) is None]

    async def produce_hostile(self, address: str, batch: Sequence[Message]) -> dict[str, str]:
        nc = await nats.connect(self.endpoint)
        try:
            for message in batch:
                token = message.case.address or "ok"
                subject = f"{address}.".encode() + (
                    token if isinstance(token, bytes) else token.encode()
                )
                hdr, payload = _header_block(message), message.payload()
                line = b"HPUB %s %d %d\r\n" % (subject, len(hdr), len(hdr) + len(payload))
                # nats-py checks subjects and header names: the protocol line is ours.
                await nc._send_command(line + hdr + payload + b"\r\n")
            await nc.flush()
        finally:
            await nc.close()
        return {}

    def ports(self) -> set[int]:
        return {urlsplit(self.endpoint).port or 4222}


class JetStreamHarness(CoreNatsHarness):
    """A stream per address capturing `<address>.>`, created by whichever side connects first."""

    id = "nats-jetstream"
    redelivery = None
    acks_each = False
    """The source rewinds its consumer to the ack floor on connect (`create`): an acked
    message after the first unsettled one comes again."""

    def stream(self, address: str) -> str:
        return "CONF_" + address.rsplit(".", 1)[1]

    def source(self, address: str) -> dict[str, Any]:
        # ack_wait bounds how long a message handed out and never settled stays away.
        jetstream = {"stream": self.stream(address), "ack_wait": "3s", "max_deliver": 100}
        return {"subject": f"{address}.>", "jetstream": jetstream}

    def sink(self, address: str) -> dict[str, Any]:
        jetstream = {"stream": self.stream(address), "subjects": [f"{address}.>"]}
        return {"subject": f"{address}.ok", "jetstream": jetstream}

    async def produce(self, address: str, messages: Sequence[Native]) -> None:
        nc = await nats.connect(self.endpoint)
        try:
            js = nc.jetstream()
            for m in messages:
                await js.publish(f"{address}.ok", m.payload, headers=dict(m.headers) or None)
        finally:
            await nc.close()

    async def reader(self, address: str) -> Reader:
        return _StreamReader(await nats.connect(self.endpoint), self.stream(address))

    def refused(self, address: str) -> tuple[Envelope, str]:
        envelope = Envelope(subject=f"{address}-elsewhere.ok", payload=b"not captured")
        return envelope, "a subject no stream captures"

    async def produce_hostile(self, address: str, batch: Sequence[Message]) -> dict[str, str]:
        return await asyncio.to_thread(produce_nats, self.endpoint, address, batch)

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            nc = await nats.connect(self.endpoint)
            try:
                for address in self.cleanups:
                    with contextlib.suppress(Exception):
                        await nc.jsm().delete_stream(self.stream(address))
            finally:
                await nc.close()

    async def new_address(self) -> str:
        address = await super().new_address()
        self.cleanups.append(address)
        return address
