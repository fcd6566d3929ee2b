"""STOMP <-> NATS end to end through `natsbridge run`: ActiveMQ Classic and RabbitMQ STOMP.

The bridge runs as a child process against the brokers of the harness, over
examples/stomp-nats.yaml with every destination, subject, stream and route name made
unique to the test (durable subscriptions are named after the route and outlive a run).
Raw stomp.py produces into and reads from the STOMP brokers; nats-py does the NATS side.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import queue
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import pytest
import stomp  # type: ignore[import-untyped]
import yaml

from natsbridge.mappings.headers import decode_text_value
from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count

pytestmark = [pytest.mark.stomp, pytest.mark.nats]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "stomp-nats.yaml"
WAIT_S = 90.0
NASTY_PAYLOAD = b"\x00head\x00\xff\xfe binary \x00\n\r\x00tail\x00"


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[BridgeProcess] = []

    def make(config: dict[str, Any], name: str = "bridge") -> BridgeProcess:
        path = write_config(tmp_path / f"{name}.yaml", config)
        process = BridgeProcess(path, tmp_path / f"{name}-data")
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()


@pytest.fixture
def rabbit_queues() -> Iterator[list[str]]:
    """RabbitMQ queues a test made through STOMP (durable): deleted afterwards."""
    names: list[str] = []
    yield names
    base = os.environ.get("NATSBRIDGE_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
    auth = base64.b64encode(b"guest:guest").decode()
    for name in names:
        request = urllib.request.Request(
            f"{base}/api/queues/%2F/{urllib.parse.quote(name, safe='')}",
            method="DELETE",
            headers={"Authorization": f"Basic {auth}"},
        )
        with contextlib.suppress(OSError):
            urllib.request.urlopen(request, timeout=5).close()


def unique_example(tag: str) -> dict[str, Any]:
    """examples/stomp-nats.yaml as written, with its names made unique to one test."""
    config = yaml.safe_load(EXAMPLE.read_text())
    config["bridge"]["id"] = f"e2e-{tag}"
    quotes, alerts = config["routes"]
    for route in config["routes"]:
        route["name"] = f"{route['name']}-{tag}"
    assert quotes["from"]["destination"] == "/topic/quotes.>"
    quotes["from"]["destination"] = f"/topic/quotes-{tag}.>"
    assert alerts["from"]["subject"] == "alerts.*"
    alerts["from"]["subject"] = f"alerts-{tag}.*"
    assert alerts["to"]["destination"] == "/queue/alerts.{{wildcard(1)}}"
    alerts["to"]["destination"] = f"/queue/alerts-{tag}.{{{{wildcard(1)}}}}"
    return config


# ---------------------------------------------------------------- raw clients


class Stomp:
    """A raw stomp.py connection to one of the harness's STOMP brokers."""

    def __init__(self, url: str, login: str, passcode: str, **connect: str) -> None:
        parts = urlsplit(url)
        self.frames: queue.Queue[Any] = queue.Queue()
        self.errors: list[str] = []
        self.receipts: queue.Queue[str] = queue.Queue()
        owner = self

        class Listener(stomp.ConnectionListener):  # type: ignore[misc]
            def on_message(self, frame: Any) -> None:
                owner.frames.put(frame)

            def on_receipt(self, frame: Any) -> None:
                owner.receipts.put(frame.headers["receipt-id"])

            def on_error(self, frame: Any) -> None:
                owner.errors.append(f"{frame.headers.get('message')}: {frame.body!r}")

        self.conn = stomp.Connection12(
            [(parts.hostname, parts.port)], vhost="/", auto_decode=False, heartbeats=(0, 0)
        )
        self.conn.set_listener("test", Listener())
        self.conn.connect(login, passcode, wait=True, headers=connect)

    def send_all(
        self, destination: str, payloads: Sequence[bytes], headers: dict[str, str] | None = None
    ) -> None:
        """Persistent SENDs; returns once the broker has processed every one of them."""
        for payload in payloads:
            self.conn.send(destination, payload, headers={"persistent": "true", **(headers or {})})
        self.sync()

    def sync(self, timeout: float = 60) -> None:
        receipt = uuid.uuid4().hex
        # A frame with a receipt is answered after every earlier frame was processed.
        self.conn.send_frame("BEGIN", {"transaction": receipt, "receipt": receipt})
        self.conn.send_frame("ABORT", {"transaction": receipt})
        deadline = time.monotonic() + timeout
        while self.receipts.get(timeout=max(0.1, deadline - time.monotonic())) != receipt:
            pass

    def subscribe(self, destination: str, **headers: str) -> None:
        self.conn.subscribe(destination, id=destination, ack="auto", headers=headers)
        self.sync()

    def take(self, count: int, timeout: float = WAIT_S) -> list[Any]:
        """`count` frames, or fewer when none arrived for 5 s after `timeout` ran out."""
        frames: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(frames) < count:
            wait = max(deadline - time.monotonic(), 5.0 if frames else 0.1)
            try:
                frames.append(self.frames.get(timeout=wait))
            except queue.Empty:
                break
        return frames

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.disconnect()


def drop_activemq_durable(url: str, login: str, passcode: str, name: str) -> None:
    """Remove ActiveMQ durable subscription `name` (client-id and subscription name)."""
    with contextlib.suppress(Exception):
        client = Stomp(url, login, passcode, **{"client-id": name})
        client.conn.unsubscribe(name, headers={"activemq.subscriptionName": name})
        client.sync(10)
        client.close()


async def stream_payloads(nats_url: str, stream: str) -> list[bytes]:
    """Every payload stored in `stream`, in order, read with direct gets by sequence."""
    nc = await nats.connect(nats_url)
    try:
        jsm = nc.jsm()
        info = await jsm.stream_info(stream)
        first, last = info.state.first_seq, info.state.last_seq
        out: list[bytes] = []
        for start in range(first, last + 1, 500):
            batch = await asyncio.gather(
                *(jsm.get_msg(stream, seq) for seq in range(start, min(start + 500, last + 1)))
            )
            out.extend(msg.data or b"" for msg in batch)
        return out
    finally:
        await nc.close()


def wait_for(check: Any, timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def delivered(bridge: BridgeProcess) -> int:
    status, body = bridge.get("/api/routes")
    if status != 200:
        return 0
    return sum(route["counters"]["delivered"] for route in body["routes"])


def buffered(bridge: BridgeProcess) -> int:
    return sum(route["buffer"]["depth"] for route in bridge.routes().values())


# ---------------------------------------------------------------- the example, as written


def test_both_routes_of_the_example_work(
    stomp_activemq_url: str,
    stomp_rabbitmq_url: str,
    activemq_credentials: tuple[str, str],
    nats_url: str,
    tag: str,
    bridge_factory: Any,
    rabbit_queues: list[str],
) -> None:
    login, passcode = activemq_credentials
    config = unique_example(tag)
    rabbit_queues.append(f"alerts-{tag}.disk")
    quotes_route = config["routes"][0]["name"]
    bridge = bridge_factory(config)
    bridge.start()  # ready: subscribed to the ActiveMQ topic tree and the NATS subjects
    try:
        # ActiveMQ topic hierarchy -> NATS: "{{destination}}" is the real destination.
        async def quotes() -> list[Any]:
            nc = await nats.connect(nats_url)
            try:
                sub = await nc.subscribe(f"quotes-{tag}.>")
                await nc.flush()
                producer = Stomp(stomp_activemq_url, login, passcode)
                headers = {"X-Colon": "a:b:c", "X-Lines": "one\ntwo", "X-Back": "c:\\temp"}
                await asyncio.to_thread(
                    producer.send_all, f"/topic/quotes-{tag}.NYSE.IBM", [NASTY_PAYLOAD], headers
                )
                await asyncio.to_thread(
                    producer.send_all, f"/topic/quotes-{tag}.NASDAQ.AAPL", [b"aapl"]
                )
                producer.close()
                return [await sub.next_msg(timeout=30) for _ in range(2)]
            finally:
                await nc.close()

        ibm, aapl = asyncio.run(quotes())
        assert (ibm.subject, ibm.data) == (f"quotes-{tag}.NYSE.IBM", NASTY_PAYLOAD)
        assert (aapl.subject, aapl.data) == (f"quotes-{tag}.NASDAQ.AAPL", b"aapl")
        assert ibm.headers["X-Colon"] == "a:b:c"
        assert decode_text_value(ibm.headers["X-Lines"]) == "one\ntwo"
        assert ibm.headers["X-Back"] == "c:\\temp"
        assert ibm.headers["Stomp-Destination"] == f"/topic/quotes-{tag}.NYSE.IBM"
        assert ibm.headers["Bridge-Origin"] == f"e2e-{tag}/activemq"

        # NATS -> a RabbitMQ STOMP queue named after the subject's wildcard.
        reader = Stomp(stomp_rabbitmq_url, "guest", "guest")
        reader.subscribe(f"/queue/alerts-{tag}.disk")

        async def alerts() -> None:
            nc = await nats.connect(nats_url)
            lines = "base64:" + base64.b64encode(b"line one\nline two").decode()
            await nc.publish(
                f"alerts-{tag}.disk",
                NASTY_PAYLOAD,
                headers={"X%3AName": "v:1", "X-Lines": lines},
            )
            await nc.publish(f"alerts-{tag}.disk", b"second")
            await nc.flush()
            await nc.close()

        asyncio.run(alerts())
        first, second = reader.take(2)
        reader.close()
        assert first.body == NASTY_PAYLOAD and second.body == b"second"
        assert first.headers["destination"] == f"/queue/alerts-{tag}.disk"
        assert first.headers["X:Name"] == "v:1"
        assert first.headers["X-Lines"] == "line one\nline two"
        assert first.headers["content-type"] == "application/octet-stream"
        assert first.headers["persistent"] == "true"
        routes = bridge.routes()
        assert routes[quotes_route]["counters"]["delivered"] == 2
        assert bridge.terminate() == 0
    finally:
        drop_activemq_durable(stomp_activemq_url, login, passcode, f"natsbridge-{quotes_route}")


# ---------------------------------------------------------------- no loss through faults


@pytest.mark.slow
def test_no_loss_activemq_to_jetstream_through_kill_9_and_an_activemq_restart(
    stomp_activemq_url: str,
    activemq_credentials: tuple[str, str],
    nats_url: str,
    tag: str,
    bridge_factory: Any,
    services: Any,
) -> None:
    """50,000 messages on a durable ActiveMQ topic subscription, the bridge kill -9'ed
    three times and ActiveMQ restarted once: every message reaches JetStream."""
    count = 50_000
    login, passcode = activemq_credentials
    config = unique_example(tag)
    route = config["routes"][0]
    config["routes"] = [route]
    stream = f"QUOTES_{tag}"
    route["to"]["subject"] = f"q{tag}.{{{{destination}}}}"
    route["to"]["jetstream"] = {"stream": stream}
    bridge = bridge_factory(config)
    try:
        bridge.start()  # creates the durable subscription
        bridge.kill()
        sent = [f"{tag}-{i}".encode() for i in range(count)]
        producer = Stomp(stomp_activemq_url, login, passcode)
        for start in range(0, count, 5000):
            producer.send_all(f"/topic/quotes-{tag}.x", sent[start : start + 5000])
        producer.close()

        for fault in ["kill", "activemq", "kill", "kill"]:
            bridge.start(wait_ready=False)
            progress = delivered(bridge) + 6_000
            wait_for(lambda p=progress: delivered(bridge) >= p, what="progress before a fault")
            if fault == "activemq":
                services.restart("activemq")
                bridge.wait_ready(timeout=90)
                wait_for(lambda p=progress: delivered(bridge) >= p + 3000, what="progress")
            bridge.kill()
        bridge.start(wait_ready=False)

        def done() -> bool:
            if asyncio.run(stream_count(nats_url, stream)) < count:
                return False
            status, _ = bridge.get("/api/routes")
            return status == 200 and buffered(bridge) == 0

        wait_for(done, timeout=240, what="every message in JetStream")
        stored = Counter(asyncio.run(stream_payloads(nats_url, stream)))
        missing = set(sent) - set(stored)
        assert not missing, f"{len(missing)} of {count} messages lost, e.g. {sorted(missing)[:5]}"
        assert set(stored) == set(sent)
        duplicates = sum(stored.values()) - count
        print(f"ActiveMQ -> JetStream: {count} sent, none missing, {duplicates} duplicates")
        assert bridge.terminate() == 0
    finally:
        drop_activemq_durable(stomp_activemq_url, login, passcode, f"natsbridge-{route['name']}")


@pytest.mark.slow
def test_no_loss_jetstream_to_rabbitmq_stomp_through_kill_9(
    stomp_rabbitmq_url: str, nats_url: str, tag: str, bridge_factory: Any, rabbit_queues: list[str]
) -> None:
    """50,000 messages from a JetStream stream to a RabbitMQ STOMP queue, the bridge
    kill -9'ed mid-way: every message arrives."""
    count = 50_000
    config = unique_example(tag)
    route = config["routes"][1]
    config["routes"] = [route]
    stream = f"ALERTS_{tag}"
    route["from"]["jetstream"] = {"stream": stream}
    destination = f"/queue/alerts-{tag}.disk"
    rabbit_queues.append(f"alerts-{tag}.disk")

    async def preload() -> list[bytes]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"alerts-{tag}.*"])
        ids = [f"{tag}-{i}".encode() for i in range(count)]
        for start in range(0, count, 1000):
            await asyncio.gather(
                *(js.publish(f"alerts-{tag}.disk", uid) for uid in ids[start : start + 1000])
            )
        await nc.close()
        return ids

    sent = asyncio.run(preload())
    reader = Stomp(stomp_rabbitmq_url, "guest", "guest")
    reader.subscribe(destination)
    arrived: Counter[bytes] = Counter()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Empty):
                arrived[reader.frames.get(timeout=0.2).body] += 1

    reading = threading.Thread(target=read)
    reading.start()
    bridge = bridge_factory(config)
    try:
        bridge.start()
        wait_for(lambda: delivered(bridge) >= 15_000, what="progress before the kill")
        bridge.kill()
        bridge.start()
        wait_for(lambda: len(arrived) >= count, timeout=240, what="every message in RabbitMQ")
        time.sleep(1)  # stragglers: duplicates are allowed, losses are not
    finally:
        stop.set()
        reading.join()
        reader.close()
    missing = set(sent) - set(arrived)
    assert not missing, f"{len(missing)} of {count} messages lost, e.g. {sorted(missing)[:5]}"
    assert set(arrived) == set(sent)
    print(
        f"JetStream -> RabbitMQ STOMP: {count} sent, none missing, "
        f"{sum(arrived.values()) - count} duplicates"
    )
    assert bridge.terminate() == 0


# ---------------------------------------------------------------- headers that steer the broker

# Each made ActiveMQ drop the connection or RabbitMQ refuse the SEND when passed as it came.
DIRECTIVES = [
    ("transformation", "jms-map-xml"),
    ("transformation", "jms-object-json"),
    ("transformation", "jms-byte"),
    ("expires", "abc"),
    ("priority", "x"),
    ("JMSXGroupSeq", "99999999999"),
    ("AMQ_SCHEDULED_DELAY", "abc"),
    ("persistent", "maybe"),
    ("expiration", "abc"),
    ("timestamp", "abc"),
    ("user-id", "someone-else"),
    ("exclusive", "true"),
    ("x-message-ttl", "abc"),
    ("reply-to", "/bad"),
]


@pytest.mark.parametrize("connection", ["activemq", "rabbit-stomp"])
def test_nats_messages_with_broker_directives_are_all_delivered_or_dead_lettered(
    connection: str,
    stomp_activemq_url: str,
    stomp_rabbitmq_url: str,
    activemq_credentials: tuple[str, str],
    nats_url: str,
    tag: str,
    bridge_factory: Any,
    rabbit_queues: list[str],
) -> None:
    """NATS -> STOMP: directives between ordinary messages, and a NUL in a header value:
    every message is delivered or dead-lettered, counted, with no reconnect at all."""
    config = unique_example(tag)
    route = config["routes"][1]
    config["routes"] = [route]
    route["to"]["connection"] = connection
    destination = f"/queue/alerts-{tag}.x"
    rabbit_queues.append(f"alerts-{tag}.x")
    sent: list[tuple[bytes, dict[str, str]]] = []
    for number, (name, value) in enumerate(DIRECTIVES):
        sent.append((f"ordinary-{number}".encode(), {}))
        sent.append((f"{name}={value}".encode(), {name: value}))
    lines = "base64:" + base64.b64encode(b"one\r\ntwo").decode()
    sent.append((b"lines", {"X-Lines": lines, "X%3AColon": "a:b"}))
    sent.append((b"nul", {"X-Nul": "base64:" + base64.b64encode(b"a\x00b").decode()}))
    sent.append((b"last", {}))
    if connection == "activemq":
        reader = Stomp(stomp_activemq_url, *activemq_credentials)
    else:
        reader = Stomp(stomp_rabbitmq_url, "guest", "guest")
    reader.subscribe(destination)
    bridge = bridge_factory(config)
    bridge.start()

    async def publish() -> None:
        nc = await nats.connect(nats_url)
        for payload, headers in sent:
            await nc.publish(f"alerts-{tag}.x", payload, headers=headers or None)
        await nc.flush()
        await nc.close()

    asyncio.run(publish())

    def counters() -> dict[str, Any]:
        return dict(bridge.routes()[route["name"]]["counters"])

    def settled() -> bool:
        now = counters()
        return bool(now["delivered"] + sum(now["dead_lettered"].values()) >= len(sent))

    wait_for(settled, what="every message delivered or dead-lettered")
    frames = {frame.body: frame.headers for frame in reader.take(len(sent) - 1)}
    reader.close()
    final = counters()
    assert final["dead_lettered"] == {"HeaderError": 1}
    assert final["delivered"] == len(sent) - 1
    assert final["reconnects"] == 0
    assert set(frames) == {payload for payload, _ in sent} - {b"nul"}
    assert frames[b"transformation=jms-map-xml"]["Carried-transformation"] == "jms-map-xml"
    assert "transformation" not in frames[b"transformation=jms-map-xml"]
    assert frames[b"lines"]["X-Lines"] == "one\r\ntwo"
    assert frames[b"lines"]["X:Colon"] == "a:b"
    assert bridge.terminate() == 0
