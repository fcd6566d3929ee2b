"""Live reconfiguration end to end: SIGHUP and POST /api/reload on a bridge under load.

RabbitMQ -> JetStream routes on the real brokers, a producer publishing numbered
messages (with publisher confirms) while the config changes under the bridge:

* a route left as it was keeps running through the reload: same start time, its
  counters keep growing, every message arrives once;
* a changed route drains and restarts with its new settings: every message arrives
  once, the first under the old subject, the rest under the new one;
* a removed route drains and stops: what it took is in JetStream, the rest waits in
  its RabbitMQ queue, nothing is lost;
* an added route starts;
* an invalid config is refused (SIGHUP and `natsbridge reload`) with positioned errors,
  and the bridge keeps running the config it had.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count
from tests.e2e.rabbitmq_admin import MANAGEMENT_URL, delete_queues
from tests.e2e.test_rabbitmq_bridge import stream_messages, wait_for

pytestmark = [pytest.mark.amqp, pytest.mark.nats]

PER_EXCHANGE = 3000  # messages the producer sends to each exchange
RELOAD_AFTER = 600  # steady-route deliveries before the first reload


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique tag for the test's names; its RabbitMQ queues are deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    yield tag
    delete_queues(lambda name: tag in name)


def route(tag: str, name: str, version: str = "v1") -> dict[str, Any]:
    """`name`-<tag>: its own exchange -> its own stream, subjects `<tag>.<name>.<version>.*`."""
    return {
        "name": f"{name}-{tag}",
        "from": {"connection": "rabbit", "exchange": f"{name}-{tag}", "binding_keys": ["#"]},
        "to": {
            "connection": "nats",
            "subject": f"{tag}.{name}.{version}.{{{{routing_key}}}}",
            "jetstream": {"stream": f"{name.upper()}_{tag}", "subjects": [f"{tag}.{name}.>"]},
        },
    }


def config(tag: str, amqp_url: str, nats_url: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {"id": f"reload-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "rabbit": {"kind": "amqp", "url": amqp_url},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": routes,
    }


class Producer(threading.Thread):
    """Publishes 0..count-1 to each exchange in turn, each confirmed, on its own connection."""

    def __init__(self, amqp_url: str, exchanges: list[str], count: int) -> None:
        super().__init__(daemon=True)
        self.amqp_url, self.exchanges, self.count = amqp_url, exchanges, count
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            channel = connection.channel()
            channel.confirm_delivery()
            for number in range(self.count):
                for exchange in self.exchanges:
                    channel.basic_publish(
                        exchange,
                        "n",
                        str(number).encode(),
                        pika.BasicProperties(delivery_mode=2),
                        mandatory=True,
                    )
            connection.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def queue_messages(name: str) -> int:
    """Messages in a RabbitMQ queue, ready and unacknowledged (management API)."""
    request = urllib.request.Request(
        f"{MANAGEMENT_URL}/api/queues/%2F/{urllib.parse.quote(name, safe='')}",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.load(response).get("messages", 0))


def numbers(messages: list[Any]) -> Counter[int]:
    return Counter(int(message.data) for message in messages)


def test_sighup_under_load_restarts_only_what_changed(
    amqp_url: str, nats_url: str, tag: str, tmp_path: Path
) -> None:
    steady, edited, dropped, added = (
        f"{name}-{tag}" for name in ("steady", "edited", "dropped", "added")
    )
    first = config(
        tag, amqp_url, nats_url, [route(tag, n) for n in ("steady", "edited", "dropped")]
    )
    second = config(
        tag,
        amqp_url,
        nats_url,
        [route(tag, "steady"), route(tag, "edited", "v2"), route(tag, "added")],
    )
    path = write_config(tmp_path / "bridge.yaml", first)
    bridge = BridgeProcess(path, tmp_path / "data")
    bridge.start()
    try:
        before = bridge.routes()
        producer = Producer(amqp_url, [steady, edited, dropped], PER_EXCHANGE)
        producer.start()
        wait_for(
            lambda: bridge.routes()[steady]["counters"]["delivered"] >= RELOAD_AFTER, what="load"
        )

        # 1. the new config, on SIGHUP, while the producer keeps publishing
        write_config(path, second)
        samples = [bridge.routes()[steady]]  # the steady route, from before the signal on
        assert bridge.process is not None
        bridge.process.send_signal(signal.SIGHUP)

        def reloaded() -> bool:
            routes = bridge.routes()
            samples.append(routes[steady])
            return added in routes and routes[edited]["started_at"] != before[edited]["started_at"]

        wait_for(reloaded, what="the reload")
        after = bridge.routes()
        assert set(after) == {steady, edited, added}
        assert producer.is_alive(), "the load ended before the reload: raise PER_EXCHANGE"
        wait_for(
            lambda: (
                samples.append(bridge.routes()[steady])
                or samples[-1]["counters"]["delivered"] > samples[0]["counters"]["delivered"]
            ),
            what="the steady route's deliveries to grow",
        )
        delivered = [sample["counters"]["delivered"] for sample in samples]
        assert delivered == sorted(delivered)  # never reset: the route never restarted
        assert {sample["started_at"] for sample in samples} == {before[steady]["started_at"]}

        # 2. an invalid config on SIGHUP: refused with its position, the bridge runs on
        broken = config(tag, amqp_url, nats_url, [*second["routes"]])
        broken["routes"][0] = {**broken["routes"][0], "delivery": "sometimes"}
        write_config(path, broken)
        bridge.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload (SIGHUP) refused" in bridge.log.read_text(), what="refusal")
        line = next(
            number
            for number, text in enumerate(path.read_text().splitlines(), 1)
            if "sometimes" in text
        )
        assert f"bridge.yaml:{line}:" in bridge.log.read_text()
        # ... and over the admin API, by `natsbridge reload`
        refused = subprocess.run(
            [sys.executable, "-m", "natsbridge", "reload", "--admin", bridge.admin],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ,
        )
        assert refused.returncode == 1
        assert f"bridge.yaml:{line}:" in refused.stderr and "sometimes" in refused.stderr
        assert bridge.process.poll() is None
        assert {name: r["started_at"] for name, r in bridge.routes().items()} == {
            name: r["started_at"] for name, r in after.items()
        }

        # 3. the load ends: every message of the routes that ran is in JetStream, once
        producer.join(timeout=300)
        assert producer.error is None, producer.error
        for name in (steady, edited):
            wait_for(
                lambda name=name: (
                    bridge.routes()[name]["buffer"]["depth"] == 0
                    and stream_total(nats_url, name) >= PER_EXCHANGE
                ),
                what=f"{name} delivered",
            )
        kept = asyncio.run(stream_messages(nats_url, stream_of(steady)))
        assert numbers(kept) == Counter(range(PER_EXCHANGE))  # none lost, none twice
        moved = asyncio.run(stream_messages(nats_url, stream_of(edited)))
        assert numbers(moved) == Counter(range(PER_EXCHANGE))
        versions = [message.subject.split(".")[2] for message in moved]
        assert versions == sorted(versions) and {"v1", "v2"} == set(versions)
        # the removed route: what it took is in JetStream, the rest waits at RabbitMQ
        taken = numbers(asyncio.run(stream_messages(nats_url, stream_of(dropped))))
        assert max(taken.values()) == 1
        wait_for(  # the management API's counts lag a few seconds
            lambda: sum(taken.values()) + queue_messages(f"natsbridge.{dropped}") == PER_EXCHANGE,
            what="every message of the removed route in JetStream or in its queue",
        )

        # 4. the added route runs
        rabbit = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = rabbit.channel()
        for number in range(100):
            channel.basic_publish(added, "n", str(number).encode())
        rabbit.close()
        wait_for(lambda: stream_total(nats_url, added) == 100, what="the added route")
        assert bridge.terminate() == 0
    finally:
        bridge.stop()


@pytest.mark.kafka
def test_a_kafka_route_restarts_under_load_without_loss(
    kafka_bootstrap: str, nats_url: str, tag: str, tmp_path: Path
) -> None:
    """The consumer group hands the partitions from the old route to the new one."""
    from kafka import KafkaProducer

    from tests.e2e.test_kafka_bridge import create_topic

    topic, name = f"reload-{tag}", f"clicks-{tag}"
    create_topic(kafka_bootstrap, topic, partitions=3)

    def with_max_in_flight(count: int) -> dict[str, Any]:
        kafka = {"kind": "kafka", "bootstrap_servers": [kafka_bootstrap]}
        data = config(tag, "amqp://unused", nats_url, [route(tag, "clicks")])
        data["connections"] = {"kafka": kafka, "nats": data["connections"]["nats"]}
        data["routes"][0]["from"] = {"connection": "kafka", "topics": [topic]}
        data["routes"][0]["to"]["subject"] = f"{tag}.clicks.{{{{partition}}}}"
        data["routes"][0]["max_in_flight"] = count
        return data

    path = write_config(tmp_path / "bridge.yaml", with_max_in_flight(1000))
    bridge = BridgeProcess(path, tmp_path / "data")
    bridge.start()
    restarted, sent = threading.Event(), threading.Event()
    total: list[int] = []

    def produce() -> None:
        """Records 0, 1, … until 1,000 after the restart was seen: load on both sides of it."""
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        number, last = 0, None
        while last is None or number < last:
            producer.send(topic, value=str(number).encode(), key=str(number % 7).encode())
            number += 1
            if number % 100 == 0:
                producer.flush()  # a steady flow rather than one burst
            if last is None and restarted.is_set():
                last = number + 1000
        producer.flush()
        producer.close()
        total.append(number)
        sent.set()

    producing = threading.Thread(target=produce, daemon=True)
    producing.start()
    try:
        wait_for(lambda: bridge.routes()[name]["counters"]["delivered"] >= 500, what="load")
        before = bridge.routes()[name]["started_at"]
        write_config(path, with_max_in_flight(500))
        assert bridge.process is not None
        bridge.process.send_signal(signal.SIGHUP)
        wait_for(lambda: bridge.routes()[name]["started_at"] != before, what="the restart")
        restarted.set()
        producing.join(timeout=300)
        assert sent.is_set()
        (count,) = total
        wait_for(lambda: stream_total(nats_url, name) >= count, what="every record")
        stored = numbers(asyncio.run(stream_messages(nats_url, stream_of(name))))
        assert set(stored) == set(range(count))  # none lost
        assert sum(stored.values()) == count  # a clean hand-over reads none twice
        assert bridge.terminate() == 0
    finally:
        bridge.stop()


def stream_of(route_name: str) -> str:
    name, tag = route_name.rsplit("-", 1)
    return f"{name.upper()}_{tag}"


def stream_total(nats_url: str, route_name: str) -> int:
    return asyncio.run(stream_count(nats_url, stream_of(route_name)))


TOKEN = "pause-Zq7-token"


def test_pause_holds_the_source_through_a_restart_and_resume_delivers(
    amqp_url: str, nats_url: str, tag: str, tmp_path: Path
) -> None:
    """With a token, through `natsbridge pause|reload -c FILE` and POST .../resume."""
    name = f"held-{tag}"
    env = {"NATSBRIDGE_TEST_TOKEN": TOKEN}
    bridge = BridgeProcess(tmp_path / "bridge.yaml", tmp_path / "data", env)
    held = config(tag, amqp_url, nats_url, [route(tag, "held")])
    admin = {"listen": f"127.0.0.1:{bridge.port}", "token": "${env:NATSBRIDGE_TEST_TOKEN}"}
    held["bridge"]["admin"] = admin
    write_config(bridge.config, held)

    def call(method: str, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(
            bridge.admin + path, method=method, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)
        except OSError as exc:
            return 0, str(exc)

    def view() -> dict[str, Any]:
        status, body = call("GET", "/api/routes")
        assert status == 200, body
        return {route["name"]: route for route in body["routes"]}[name]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "natsbridge", *args, "-c", str(bridge.config)],
            capture_output=True,
            text=True,
            timeout=120,
            env=bridge.env,  # the config needs what the bridge was given
        )

    bridge.start(wait_ready=False)
    try:
        wait_for(lambda: call("GET", "/readyz")[0] == 200, what="ready")
        anonymous = urllib.request.Request(f"{bridge.admin}/api/reload", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(anonymous, timeout=30)
        assert refused.value.code == 401
        paused = cli("pause", name)
        assert paused.returncode == 0 and f"{name}: paused" in paused.stdout, paused.stderr
        before = view()
        assert before["state"] == "paused" and before["paused"]
        assert call("GET", "/readyz")[0] == 200  # paused on purpose is not a failure
        rabbit = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = rabbit.channel()
        for number in range(50):
            channel.basic_publish(name, "n", str(number).encode())
        rabbit.close()
        # The broker pushed them to the bridge's consumer, which holds them un-acked.
        wait_for(lambda: queue_messages(f"natsbridge.{name}") == 50, what="50 held at RabbitMQ")
        assert view()["counters"]["received"] == 0

        # a restart of the route (a changed setting) keeps it paused
        held["routes"][0]["max_in_flight"] = 200
        write_config(bridge.config, held)
        reloaded = cli("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert f"restarted: {name}" in reloaded.stdout
        after = view()
        assert after["started_at"] != before["started_at"]
        assert after["paused"] and after["counters"]["received"] == 0

        status, body = call("POST", f"/api/routes/{name}/resume")
        assert (status, body) == (200, {"route": name, "paused": False})
        wait_for(lambda: stream_total(nats_url, name) == 50, what="delivery after resume")
        wait_for(lambda: queue_messages(f"natsbridge.{name}") == 0, what="acked at RabbitMQ")
        assert view()["state"] == "running"
        assert bridge.terminate() == 0
    finally:
        bridge.stop()
