"""The main job end to end: RabbitMQ <-> NATS/JetStream through `natsbridge run`.

Every test runs the bridge as a child process against the real brokers of the harness,
with names unique to the test so that runs never see each other's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pika
import pytest
import yaml

from natsbridge.bridge.broker.broker import Broker
from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count
from tests.e2e.rabbitmq_admin import delete_queues

pytestmark = [pytest.mark.amqp, pytest.mark.nats]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rabbitmq-nats.yaml"
WAIT_S = 90.0


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def unique_config(tag: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The shared example with every exchange, stream, subject and queue made unique."""
    config = example()
    names = {
        "orders": f"orders-{tag}",
        "ORDERS": f"ORDERS_{tag}",
        "legacy": f"legacy{tag}",
        "shipments": f"shipments{tag}",
        "SHIPMENTS": f"SHIPMENTS_{tag}",
        "pricing": f"pricing{tag}",
        "pricing_rpc": f"pricing_rpc_{tag}",
    }
    config["bridge"]["id"] = f"e2e-{tag}"
    orders, shipments, pricing = config["routes"]
    # Route names too: the bridge's own queue `natsbridge.<route>` outlives a test.
    for route in config["routes"]:
        unique = f"{route['name']}-{tag}"
        names[route["name"]] = unique
        route["name"] = unique
    orders["from"]["exchange"] = names["orders"]
    orders["to"]["subject"] = f"{names['legacy']}.orders.{{{{routing_key}}}}"
    orders["to"]["jetstream"]["stream"] = names["ORDERS"]
    shipments["from"]["subject"] = f"{names['shipments']}.*"
    shipments["from"]["jetstream"]["stream"] = names["SHIPMENTS"]
    shipments["to"]["exchange"] = names["shipments"]
    pricing["from"]["subject"] = f"{names['pricing']}.quote"
    pricing["to"]["routing_key"] = names["pricing_rpc"]
    return config, names


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique tag for a test's names; its RabbitMQ queues are deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    yield tag
    delete_queues(lambda name: tag in name)


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


# ---------------------------------------------------------------- broker helpers


class Rabbit:
    """A blocking pika connection for setting up, publishing and reading."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def observe(self, exchange: str, binding: str = "#") -> str:
        """A durable queue bound to `exchange`, declared before anything is published."""
        self.channel.exchange_declare(exchange, "topic", durable=True)
        queue = f"observe.{exchange}"
        self.channel.queue_declare(queue, durable=True)
        self.channel.queue_bind(queue, exchange, binding)
        return queue

    def publish(self, exchange: str, key: str, body: bytes, **props: Any) -> None:
        self.channel.basic_publish(
            exchange, key, body, pika.BasicProperties(delivery_mode=2, **props), mandatory=True
        )

    def drain(self, queue: str, expected: int, timeout: float = WAIT_S) -> list[tuple[Any, bytes]]:
        """Read and ack messages from `queue` until `expected` arrived or it is idle."""
        received: list[tuple[Any, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            method, props, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                self.connection.sleep(0.2)
                continue
            received.append((props, body))
        return received

    def depth(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


async def stream_messages(nats_url: str, stream: str, timeout: float = 10.0) -> list[Any]:
    """Every message stored in `stream`, read with an ephemeral ordered pull."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe("", stream=stream)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(messages) < total and time.monotonic() < deadline:
            try:
                batch = await sub.fetch(min(1000, total - len(messages)), timeout=2)
            except nats.errors.TimeoutError:
                continue
            for message in batch:
                await message.ack()
            messages.extend(batch)
        return messages
    finally:
        await nc.close()


def wait_for(check: Any, timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- the example, as written


def test_every_route_of_the_example_works(
    amqp_url: str, nats_url: str, tag: str, bridge_factory: Any
) -> None:
    config, names = unique_config(tag)
    rabbit = Rabbit(amqp_url)
    observed = rabbit.observe(names["shipments"])
    bridge = bridge_factory(config)
    bridge.start()

    # RabbitMQ -> JetStream, with properties and typed headers
    for i in range(50):
        rabbit.publish(
            names["orders"],
            f"eu.created.{i}",
            f"order-{i}".encode(),
            headers={"n": i, "ok": True, "who": "ann"},
            correlation_id=f"c{i}",
            content_type="application/json",
            priority=3,
            message_id=f"m{i}",
        )
    wait_for(lambda: asyncio.run(stream_count(nats_url, names["ORDERS"])) == 50, what="orders")
    stored = asyncio.run(stream_messages(nats_url, names["ORDERS"]))
    assert [m.data for m in stored] == [f"order-{i}".encode() for i in range(50)]
    first = stored[0]
    assert first.subject == f"{names['legacy']}.orders.eu.created.0"
    assert first.headers["who"] == "ann"
    assert first.headers["Amqp-Correlation-Id"] == "c0"
    assert first.headers["Amqp-Priority"] == "3"
    assert first.headers["Bridge-Origin"] == f"e2e-{tag}/rabbit"

    # JetStream -> RabbitMQ: the second token becomes the routing key; headers back to AMQP
    async def publish_shipments() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for i in range(50):
            region = ("eu", "us")[i % 2]
            await js.publish(
                f"{names['shipments']}.{region}",
                f"ship-{i}".encode(),
                headers={"X-Trace": f"t{i}", "Amqp-Correlation-Id": f"k{i}"},
            )
        await nc.close()

    asyncio.run(publish_shipments())
    arrived = rabbit.drain(observed, 50)
    assert [body for _, body in arrived] == [f"ship-{i}".encode() for i in range(50)]
    props, _ = arrived[1]
    assert props.headers["X-Trace"] == "t1"
    assert props.correlation_id == "k1"
    assert props.delivery_mode == 2

    # NATS request -> RabbitMQ RPC server -> reply
    server = Rabbit(amqp_url)
    server.channel.queue_declare(names["pricing_rpc"], auto_delete=True)

    def answer(ch: Any, method: Any, props: Any, body: bytes) -> None:
        ch.basic_publish(
            "",
            props.reply_to,
            b"quote:" + body,
            pika.BasicProperties(correlation_id=props.correlation_id),
        )
        ch.basic_ack(method.delivery_tag)

    server.channel.basic_consume(names["pricing_rpc"], answer)

    async def ask() -> list[bytes]:
        nc = await nats.connect(nats_url)
        try:
            tasks = [
                nc.request(f"{names['pricing']}.quote", f"sku{i}".encode(), timeout=10)
                for i in range(5)
            ]
            return [reply.data for reply in await asyncio.gather(*tasks)]
        finally:
            await nc.close()

    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            server.connection.process_data_events(time_limit=0.1)

    serving = threading.Thread(target=serve)
    serving.start()
    try:
        replies = asyncio.run(ask())
    finally:
        done.set()
        serving.join()
    assert replies == [f"quote:sku{i}".encode() for i in range(5)]
    routes = bridge.routes()
    assert routes[names["orders-to-nats"]]["counters"]["delivered"] == 50
    assert routes[names["pricing-rpc"]]["counters"]["delivered"] == 5
    assert bridge.terminate() == 0
    rabbit.close()
    server.close()


def test_failed_requests_are_answered_with_a_status(
    amqp_url: str, nats_url: str, tag: str, bridge_factory: Any
) -> None:
    """No RPC queue: 503 with the reason at once; a queue nobody serves: 408 after 1 s."""
    config, names = unique_config(tag)
    config["routes"] = [config["routes"][2]]
    config["routes"][0]["request_reply"]["timeout"] = "1s"
    bridge = bridge_factory(config)
    bridge.start()

    async def ask() -> tuple[Any, float]:
        nc = await nats.connect(nats_url)
        began = time.monotonic()
        try:
            reply = await nc.request(f"{names['pricing']}.quote", b"sku", timeout=10)
            return reply, time.monotonic() - began
        finally:
            await nc.close()

    unroutable, _ = asyncio.run(ask())
    assert unroutable.headers["Nats-Service-Error-Code"] == "503"
    assert "MessageRejected" in unroutable.headers["Nats-Service-Error"]
    rabbit = Rabbit(amqp_url)
    rabbit.channel.queue_declare(names["pricing_rpc"], auto_delete=False)
    try:
        timed_out, waited = asyncio.run(ask())
        assert timed_out.headers["Nats-Service-Error-Code"] == "408"
        assert 1.0 <= waited < 5.0
    finally:
        rabbit.channel.queue_delete(names["pricing_rpc"])
        rabbit.close()
    assert bridge.terminate() == 0


# ---------------------------------------------------------------- failure and recovery


def preload_orders(rabbit: Rabbit, exchange: str, queue: str, count: int, tag: str) -> list[str]:
    """Publish `count` uniquely identified, persistent messages into `queue` (nobody consumes).

    Unconfirmed, then counted in the queue: waiting for each confirm in turn took a
    minute for 100,000 and, on a loaded machine, most of the test's time budget.
    """
    ids = [f"{tag}-{i}" for i in range(count)]
    channel = rabbit.connection.channel()
    for uid in ids:
        channel.basic_publish(
            exchange,
            "eu.created",
            uid.encode(),
            pika.BasicProperties(delivery_mode=2, message_id=uid),
            mandatory=True,
        )
    channel.close()
    wait_for(lambda: rabbit.depth(queue) == count, what=f"{count} messages in {queue}")
    return ids


async def preload_shipments(
    nats_url: str, stream: str, subject: str, count: int, tag: str
) -> list[str]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{subject.rsplit('.', 1)[0]}.*"])
    ids = [f"{tag}-{i}" for i in range(count)]
    for start in range(0, count, 500):
        await asyncio.gather(
            *(js.publish(subject, uid.encode()) for uid in ids[start : start + 500])
        )
    await nc.close()
    return ids


@pytest.mark.slow
def test_no_loss_through_kill_9_and_broker_restarts(
    amqp_url: str, nats_url: str, tag: str, bridge_factory: Any, services: Any
) -> None:
    """RabbitMQ -> JetStream (exactly_once) and JetStream -> RabbitMQ (at_least_once),
    while the bridge is kill -9'ed three times, RabbitMQ restarted once, NATS once."""
    count = 100_000
    config, names = unique_config(tag)
    config["routes"][0]["delivery"] = "exactly_once"  # dedup by the producer's message_id
    del config["routes"][2]
    rabbit = Rabbit(amqp_url)
    observed = rabbit.observe(names["shipments"])
    bridge = bridge_factory(config)
    bridge.start()  # declares and binds the bridge's own queue
    bridge.kill()
    queue = f"natsbridge.{names['orders-to-nats']}"
    sent_orders = preload_orders(rabbit, names["orders"], queue, count, tag)
    sent_shipments = asyncio.run(
        preload_shipments(nats_url, names["SHIPMENTS"], f"{names['shipments']}.eu", count, tag)
    )
    rabbit.close()

    def arrived() -> int:
        """Messages at both destinations (duplicates too); -1 while a broker is away."""
        try:
            with contextlib.closing(Rabbit(amqp_url)) as reader:
                depth = reader.depth(observed)
            return depth + asyncio.run(stream_count(nats_url, names["ORDERS"]))
        except (pika.exceptions.AMQPError, nats.errors.Error, OSError):
            return -1

    # Each fault comes once a further seventh of the 2 x 100,000 messages has arrived, so
    # that all five land in mid-transfer, however fast a bridge run between them goes
    # (it keeps moving messages while a broker restarts).
    faults = ["kill", "rabbitmq", "kill", "nats", "kill"]
    arrived_at_fault = []
    for step, fault in enumerate(faults, start=1):
        bridge.start()
        goal = step * 2 * count // (len(faults) + 2)
        try:
            wait_for(
                lambda goal=goal: arrived() >= goal,
                what=f"{goal} arrived before fault {step} ({fault})",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {bridge.routes()}\n{bridge.tail()}") from None
        arrived_at_fault.append(arrived())
        if fault == "kill":
            bridge.kill()
        else:
            services.restart(fault)
            bridge.wait_ready()
            bridge.kill()
    assert 0 < max(arrived_at_fault) < 2 * count, (
        f"faults not all in mid-transfer: {arrived_at_fault}"
    )
    bridge.start()

    def done() -> bool:
        backlog = bridge.routes()
        buffered = sum(route["buffer"]["depth"] for route in backlog.values())
        return buffered == 0 and asyncio.run(stream_count(nats_url, names["ORDERS"])) >= count

    wait_for(done, timeout=300, what="everything delivered")
    stored = asyncio.run(stream_messages(nats_url, names["ORDERS"], timeout=120))
    arrived_orders = Counter(m.data.decode() for m in stored)
    assert set(arrived_orders) == set(sent_orders), "messages lost RabbitMQ -> JetStream"
    assert max(arrived_orders.values()) == 1, "duplicates in JetStream under exactly_once"

    reader = Rabbit(amqp_url)
    arrived = Counter(body.decode() for _, body in reader.drain(observed, count, timeout=300))
    while reader.depth(observed):
        arrived.update(body.decode() for _, body in reader.drain(observed, reader.depth(observed)))
    reader.close()
    assert not set(sent_shipments) - set(arrived), "messages lost JetStream -> RabbitMQ"
    assert set(arrived) == set(sent_shipments)
    assert bridge.terminate() == 0


def test_poison_messages_are_dead_lettered_and_the_rest_flow(
    amqp_url: str, nats_url: str, tag: str, bridge_factory: Any
) -> None:
    config, names = unique_config(tag)
    config["routes"] = [config["routes"][0]]
    config["routes"][0]["max_payload"] = "4KiB"
    rabbit = Rabbit(amqp_url)
    bridge = bridge_factory(config)
    bridge.start()
    rabbit.publish(names["orders"], "eu.ok", b"before")
    rabbit.publish(names["orders"], "eu.big", b"x" * 5000, message_id="too-big")
    rabbit.publish(names["orders"], "eu.ok", b"after")
    wait_for(lambda: asyncio.run(stream_count(nats_url, names["ORDERS"])) == 2, what="2 delivered")
    route = bridge.routes()[names["orders-to-nats"]]
    assert route["counters"]["dead_lettered"] == {"PayloadTooLarge": 1}
    assert bridge.terminate() == 0
    rabbit.close()
    assert [m.data for m in asyncio.run(stream_messages(nats_url, names["ORDERS"]))] == [
        b"before",
        b"after",
    ]

    async def dead_letters() -> list[Any]:
        broker = await Broker.open(bridge.data_dir)
        try:
            return await broker.messages(f"{names['orders-to-nats']}.dead-letters")
        finally:
            await broker.close()

    [dead] = asyncio.run(dead_letters())
    assert dead.payload == b"x" * 5000
    assert (
        "payload of 5000 bytes exceeds the limit of 4096 bytes" in dead.headers["Bridge-Reason"][0]
    )


def test_two_way_routes_do_not_loop(
    amqp_url: str, nats_url: str, tag: str, bridge_factory: Any
) -> None:
    exchange, prefix = f"loop-{tag}", f"loop{tag}"
    config = example()
    config["bridge"]["id"] = f"e2e-{tag}"
    config["routes"] = [
        {
            "name": f"rabbit-to-nats-{tag}",
            "from": {"connection": "rabbit", "exchange": exchange, "binding_keys": ["#"]},
            "to": {"connection": "nats", "subject": f"{prefix}.{{{{routing_key}}}}"},
        },
        {
            "name": f"nats-to-rabbit-{tag}",
            "from": {"connection": "nats", "subject": f"{prefix}.*"},
            "to": {"connection": "rabbit", "exchange": exchange, "routing_key": "{{wildcard(1)}}"},
        },
    ]
    rabbit = Rabbit(amqp_url)
    observed = rabbit.observe(exchange)
    bridge = bridge_factory(config)
    bridge.start()

    async def exchange_messages() -> list[bytes]:
        nc = await nats.connect(nats_url)
        seen: list[bytes] = []

        async def collect(message: Any) -> None:
            seen.append(message.data)

        sub = await nc.subscribe(f"{prefix}.*", cb=collect)
        rabbit.publish(exchange, "from-rabbit", b"R")
        await nc.publish(f"{prefix}.from-nats", b"N")
        # Both arrive (bounded: a loaded machine is slow), then an echo would have had time.
        for _ in range(300):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        await sub.unsubscribe()
        await nc.close()
        return seen

    on_nats = asyncio.run(exchange_messages())
    on_rabbit = [body for _, body in rabbit.drain(observed, 10, timeout=3)]
    assert sorted(on_nats) == [b"N", b"R"]  # each once: no echo
    assert sorted(on_rabbit) == [b"N", b"R"]
    routes = bridge.routes()
    assert routes[f"rabbit-to-nats-{tag}"]["counters"]["looped"] == 1
    assert routes[f"nats-to-rabbit-{tag}"]["counters"]["looped"] == 1
    assert bridge.terminate() == 0
    rabbit.close()


def test_sigterm_with_messages_in_flight_loses_nothing(
    amqp_url: str, nats_url: str, tag: str, bridge_factory: Any
) -> None:
    count = 10_000
    config, names = unique_config(tag)
    config["routes"] = [config["routes"][0]]
    rabbit = Rabbit(amqp_url)
    bridge = bridge_factory(config)
    bridge.start()
    bridge.kill()
    queue = f"natsbridge.{names['orders-to-nats']}"
    ids = preload_orders(rabbit, names["orders"], queue, count, tag)
    bridge.start()
    route = names["orders-to-nats"]
    wait_for(lambda: bridge.routes()[route]["counters"]["received"] > 0, what="flow")
    assert bridge.terminate() == 0  # drains in flight, acks, exits cleanly
    left_in_rabbit = rabbit.depth(queue)
    in_stream = asyncio.run(stream_count(nats_url, names["ORDERS"]))
    assert in_stream + left_in_rabbit >= count  # every message is somewhere
    bridge.start()
    wait_for(lambda: asyncio.run(stream_count(nats_url, names["ORDERS"])) >= count, what="the rest")
    assert bridge.terminate() == 0
    stored = {m.data.decode() for m in asyncio.run(stream_messages(nats_url, names["ORDERS"]))}
    assert stored == set(ids)
    assert rabbit.depth(queue) == 0
    rabbit.close()
