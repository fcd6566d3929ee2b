"""Where the hostile suite's messages ended: destination readers, dead letters, the account.

Ids come from payloads (``hid=<id>;``), else from the ``X-Hid`` header, so a reader
needs nothing of a message but its bytes and header values.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pika
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from natsbridge.mappings.headers import decode_value
from tests.e2e.hostile import HID, HID_HEADER, Message, RawStomp

READ_LIMIT = 5000  # more than any route sends: a reader never runs unbounded


def hid_of(payload: bytes | None, headers: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> str:
    """The message's id: from its payload, else its X-Hid header; "?" when neither."""
    found = HID.match(payload or b"")
    if found:
        return found.group(1).decode()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if (name.decode() if isinstance(name, bytes) else name) == HID_HEADER and value:
            raw = value if isinstance(value, bytes) else decode_value(str(value))
            return raw.decode(errors="replace")
    return "?"


async def _stream_ids(url: str, stream: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        jsm = nc.jsm()
        try:
            state = (await jsm.stream_info(stream)).state
        except nats.js.errors.NotFoundError:
            return []
        ids: list[str] = []
        if not state.messages:
            return ids
        for seq in range(state.first_seq, min(state.last_seq, state.first_seq + READ_LIMIT) + 1):
            try:
                msg = await jsm.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                continue  # deleted (a rollup, a TTL): counted as not delivered
            ids.append(hid_of(msg.data, msg.headers or {}))
        return ids
    finally:
        await nc.close()


def jetstream_ids(url: str, stream: str) -> list[str]:
    """The ids stored in JetStream `stream`, in order."""
    return asyncio.run(_stream_ids(url, stream))


def amqp_ids(url: str, queue: str) -> list[str]:
    """The ids in RabbitMQ `queue` (read and acked until it is empty)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    ids = []
    try:
        channel = connection.channel()
        while len(ids) < READ_LIMIT:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            ids.append(hid_of(body, properties.headers or {}))
    finally:
        connection.close()
    return ids


def kafka_ids(bootstrap: str, topic: str) -> list[str]:
    """The ids of every record in `topic`, from the beginning to its current end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        end = consumer.end_offsets(partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ids: list[str] = []
        want = sum(end.values())
        deadline = time.monotonic() + 30
        while len(ids) < min(want, READ_LIMIT) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                ids.extend(hid_of(r.value, r.headers or []) for r in batch)
        return ids
    finally:
        consumer.close(autocommit=False)


def stomp_ids(url: str, login: str, passcode: str, destination: str) -> list[str]:
    """The ids in a STOMP queue: subscribe (auto ack) and read until 3 s pass without one."""
    client = RawStomp(url, login, passcode)
    ids: list[str] = []
    try:
        client.write(
            b"SUBSCRIBE", [(b"destination", destination.encode()), (b"id", b"1"), (b"ack", b"auto")]
        )
        while len(ids) < READ_LIMIT:
            try:
                command, headers, body = client.read(3)
            except TimeoutError:
                break
            if command == b"MESSAGE":
                ids.append(hid_of(body, [(n, _unescape(v)) for n, v in headers]))
    finally:
        client.close()
    return ids


def _unescape(value: bytes) -> bytes:
    return (value.replace(b"\\n", b"\n").replace(b"\\r", b"\r").replace(b"\\c", b":")).replace(
        b"\\\\", b"\\"
    )


def dead_letters(data_dir: Path) -> dict[str, dict[str, str]]:
    """{dead-letter stream: {id: Bridge-Reason}} through `natsbridge dlq ls/show --json`."""

    def cli(*args: str) -> Any:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "natsbridge",
                "dlq",
                *args,
                "--data-dir",
                str(data_dir),
                "--json",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"natsbridge dlq {args}: {done.stderr.decode()}"
        return json.loads(done.stdout)

    found: dict[str, dict[str, str]] = {}
    for entry in cli("ls")["dead_letters"]:
        stream = entry["dead_letters"]
        shown = cli("show", stream, "--limit", str(READ_LIMIT))["messages"]
        found[stream] = {
            hid_of(base64.b64decode(m["payload_base64"]), m["headers"]): (
                m["headers"].get("Bridge-Reason") or [""]
            )[0]
            for m in shown
        }
    return found


@dataclass
class Account:
    """One route's outcome, by id: what was sent, delivered and dead-lettered."""

    route: str
    sent: dict[str, str]  # id -> kind, only what the source broker accepted
    tail: set[str]  # the ordinary ids sent after every hostile one
    delivered: Counter[str] = field(default_factory=Counter)
    dead: dict[str, str] = field(default_factory=dict)  # id -> Bridge-Reason
    refused: dict[str, str] = field(default_factory=dict)  # id -> the source broker's answer
    must_dead_letter: dict[str, str] = field(default_factory=dict)  # id -> reason class
    resends: int = 0  # the route's reconnects + redeliveries: what may explain a duplicate

    def problems(self) -> list[str]:
        """What breaks "sent = delivered + dead-lettered, none lost, the flow continues"."""
        out = []

        def kinds(ids: Iterable[str]) -> str:
            """Ids grouped by kind: "empty-name #024, duplicate-message_id #044 #045"."""
            by_kind: dict[str, list[str]] = {}
            for hid in sorted(ids):
                by_kind.setdefault(self.sent.get(hid, "?"), []).append("#" + hid.rsplit(".")[-1])
            return ", ".join(f"{kind} {' '.join(nums)}" for kind, nums in by_kind.items())

        lost = set(self.sent) - set(self.delivered) - set(self.dead)
        if lost - self.tail:
            out.append(f"LOST {len(lost - self.tail)}: {kinds(lost - self.tail)}")
        if lost & self.tail:
            out.append(f"FLOW STOPPED: {len(lost & self.tail)} of {len(self.tail)} tail ids lost")
        both = set(self.delivered) & set(self.dead)
        if both:
            out.append(f"delivered AND dead-lettered: {kinds(both)}")
        twice = [i for i, n in self.delivered.items() if n > 1]
        if twice and not self.resends:
            # at_least_once repeats a message only after a reconnect or a redelivery.
            out.append(f"DUPLICATED with no reconnect or redelivery: {kinds(twice)}")
        unknown = (set(self.delivered) | set(self.dead)) - set(self.sent) - set(self.refused)
        if unknown:
            out.append(f"ids nobody sent on this route: {sorted(unknown)}")
        silent = [i for i, reason in self.dead.items() if not reason.strip()]
        if silent:
            out.append(f"dead-lettered WITHOUT a Bridge-Reason: {kinds(silent)}")
        for hid, reason in sorted(self.must_dead_letter.items()):
            if hid in self.sent and not self.dead.get(hid, "").startswith(reason):
                where = (
                    "delivered"
                    if hid in self.delivered
                    else f"dead-lettered as {self.dead[hid]!r}"
                    if hid in self.dead
                    else "lost"
                )
                out.append(f"{hid} ({self.sent[hid]}) should be dead-lettered {reason}: {where}")
        return out

    def summary(self) -> str:
        return (
            f"{self.route}: sent {len(self.sent)}, delivered {len(self.delivered)} distinct "
            f"({sum(self.delivered.values())} copies), dead-lettered {len(self.dead)}, "
            f"refused by the source broker {len(self.refused)}, "
            f"reconnects + redeliveries {self.resends}"
        )


def account_of(
    route: str,
    batch: Iterable[Message],
    tail: Iterable[Message],
    refused: Mapping[str, str],
    delivered: Iterable[str],
    dead: Mapping[str, str],
    resends: int,
) -> Account:
    """An Account from what was produced and what the readers found."""
    everything = [*batch, *tail]
    return Account(
        route=route,
        sent={m.hid: m.case.kind for m in everything if m.hid not in refused},
        tail={m.hid for m in tail if m.hid not in refused},
        delivered=Counter(delivered),
        dead=dict(dead),
        refused=dict(refused),
        must_dead_letter={
            m.hid: m.case.must_dead_letter for m in everything if m.case.must_dead_letter
        },
        resends=resends,
    )
