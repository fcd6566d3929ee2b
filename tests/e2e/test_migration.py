"""The worked migration of the README, end to end on the real brokers (issue 17).

A legacy producer and a legacy consumer (processes: tests/e2e/migration_actors.py) send
and check numbered messages at a steady rate while the flow goes import -> mirror ->
verify -> cutover (the producer moves to NATS) with a kill -9 of the bridge in the middle
of cutover, then either forward -> retire (the consumer moves to NATS) -> done, or back
from cutover to mirror (the producer moves back). Counted at the end: every number
produced was consumed; duplicates are counted and stay within the bound the README
explains (the consumer's start margin plus what the killed bridge had in flight).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml
from kafka import KafkaAdminClient

from natsbridge.bridge.cli import main
from tests.e2e.bridge_process import BridgeProcess, free_port
from tests.e2e.jetstream import stream_count
from tests.e2e.rabbitmq_admin import _AUTH, MANAGEMENT_URL, delete_queues

pytestmark = [pytest.mark.nats, pytest.mark.slow]

RATE = 100.0  # messages per second from each producer
MARGIN_S = 3.0  # the NATS consumer starts this long before the legacy consumer stopped
IN_FLIGHT = 1000  # a route's max_in_flight: what a killed bridge may deliver twice
WAIT_S = 90.0  # bound on every wait (a failure, not a measurement)
ROOT = Path(__file__).resolve().parents[2]


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def numbers(log: Path) -> list[int]:
    if not log.exists():
        return []
    return [int(line) for line in log.read_text().split("\n")[:-1] if line]


@dataclass
class Actor:
    """A producer or consumer process and the log of the numbers it handled."""

    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) == 0, self.log.with_suffix(".err").read_text()


@dataclass
class Flow:
    """One migrating flow, its applications and its bridge."""

    kind: str  # "amqp" or "kafka"
    name: str
    tmp: Path
    legacy_url: str
    nats_url: str
    legacy_produce: list[str]  # actor arguments addressing the legacy side
    legacy_consume: list[str]
    stream: str = ""
    subject: str = ""
    config: Path = field(default_factory=Path)
    bridge: BridgeProcess | None = None
    actors: list[Actor] = field(default_factory=list)
    logs: dict[str, list[Path]] = field(default_factory=lambda: {"produced": [], "consumed": []})

    def actor(self, role: str, side: str, *args: str) -> Actor:
        log = self.tmp / f"{role}-{side}-{len(self.actors)}.log"
        url = self.nats_url if side == "nats" else self.legacy_url
        command = [sys.executable, "-m", "tests.e2e.migration_actors", role, side]
        with log.with_suffix(".err").open("wb") as err:
            process = subprocess.Popen(
                [*command, "--url", url, "--log", str(log), "--rate", str(RATE), *args],
                cwd=ROOT,
                stderr=err,
            )
        actor = Actor(process, log)
        self.actors.append(actor)
        self.logs["produced" if role == "produce" else "consumed"].append(log)
        return actor

    def produced(self) -> list[int]:
        return [n for log in self.logs["produced"] for n in numbers(log)]

    def consumed(self) -> list[int]:
        return [n for log in self.logs["consumed"] for n in numbers(log)]

    def migrate(self, *args: str) -> tuple[int, str]:
        """`natsbridge migrate ARGS -c CONFIG`, as an operator runs it."""
        result = subprocess.run(
            [sys.executable, "-m", "natsbridge", "migrate", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ},
            timeout=240,
        )
        return result.returncode, result.stdout + result.stderr

    def step(self, verb: str, *args: str) -> str:
        """Advance or roll back, retrying while a precondition (lag, parity) is not met yet."""
        deadline = time.monotonic() + WAIT_S
        while True:
            code, output = self.migrate(verb, self.name, *args)
            print(f"[{time.strftime('%X')}] {verb} -> {code}: {output.strip()[:300]}")
            if code == 0:
                assert "the running bridge reloaded" in output and "FAILED" not in output, output
                return output
            assert "blocked:" in output, output
            if time.monotonic() > deadline:
                _, report = self.migrate("verify", self.name, "--json")
                raise AssertionError(f"still blocked: {output}\nverify: {report}")
            time.sleep(0.5)

    def phase(self) -> dict[str, Any]:
        code, output = self.migrate("status", "--json")
        assert code == 0, output
        [entry] = [m for m in json.loads(output)["migrations"] if m["name"] == self.name]
        return entry

    def stream_count(self) -> int:
        import asyncio

        return asyncio.run(stream_count(self.nats_url, self.stream))


# ---------------------------------------------------------------- the legacy systems


def rabbitmq_flow(tmp: Path, tag: str, amqp_url: str, nats_url: str) -> Flow:
    """An exchange with a legacy consumer's queue bound, imported from a definitions export."""
    exchange, queue = f"nb-mig-{tag}", f"nb-mig-{tag}-app"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, "#")
    connection.close()
    request = urllib.request.Request(f"{MANAGEMENT_URL}/api/definitions", headers=_AUTH)
    with urllib.request.urlopen(request, timeout=30) as response:
        (tmp / "definitions.json").write_bytes(response.read())
    flow = Flow(
        "amqp",
        exchange,
        tmp,
        amqp_url,
        nats_url,
        ["--exchange", exchange, "--key", "orders"],
        ["--queue", queue],
    )
    imported = run_import(["rabbitmq", "--definitions", str(tmp / "definitions.json")], tmp)
    return configure(flow, imported, back={"routing_key": "orders"})


def kafka_flow(tmp: Path, tag: str, bootstrap: str, nats_url: str) -> Flow:
    """A topic with a legacy consumer group, imported from the cluster."""
    topic = f"nb-mig-{tag}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics(
            {topic: {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True
        )
    except TypeError:  # kafka-python's older signature
        from kafka.admin import NewTopic

        admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        admin.close()
    flow = Flow(
        "kafka",
        topic,
        tmp,
        bootstrap,
        nats_url,
        ["--topic", topic],
        ["--topic", topic, "--group", f"{topic}-app"],
    )
    imported = run_import(["kafka", "--bootstrap", bootstrap, "--topics", f"^{topic}$"], tmp)
    return configure(flow, imported, back=None)


def run_import(args: list[str], tmp: Path) -> dict[str, Any]:
    out = tmp / "imported.yaml"
    assert main(["import", *args, "-o", str(out)]) == 0
    assert main(["validate", "-c", str(out)]) == 0
    loaded: dict[str, Any] = yaml.safe_load(out.read_text())
    return loaded


def configure(flow: Flow, imported: dict[str, Any], back: dict[str, Any] | None) -> Flow:
    """The imported migration of `flow`, with this bridge's data dir, admin port and `back`."""
    [migration] = [
        m
        for m in imported["migrations"]
        if flow.name in (m["legacy"].get("exchange"), *(m["legacy"].get("topics") or ()))
    ]
    assert migration["phase"] == "mirror"
    flow.name = migration["name"]
    flow.stream = migration["nats"]["stream"]
    flow.subject = migration["nats"]["subject"].replace("{{routing_key}}", "orders")
    flow.subject = flow.subject.replace("{{topic}}", flow.legacy_produce[1])
    if back is not None:
        migration["back"] = back
    port = free_port()
    config = {
        **imported,
        "bridge": {
            "id": f"mig-{flow.kind}",
            "data_dir": str(flow.tmp / "bridge-data"),
            "admin": {"listen": f"127.0.0.1:{port}"},
        },
        "migrations": [migration],
    }
    flow.config = flow.tmp / "bridge.yaml"
    flow.config.write_text(yaml.safe_dump(config, sort_keys=False))
    flow.bridge = BridgeProcess(flow.config, flow.tmp / "bridge-data")
    flow.bridge.port = port
    return flow


@pytest.fixture(
    params=[
        pytest.param("rabbitmq", marks=pytest.mark.amqp),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ]
)
def flow(
    request: pytest.FixtureRequest, tmp_path: Path, unique_name: str, nats_url: str
) -> Iterator[Flow]:
    tag = unique_name.rsplit("-", 1)[-1]
    if request.param == "rabbitmq":
        made = rabbitmq_flow(tmp_path, tag, request.getfixturevalue("amqp_url"), nats_url)
    else:
        made = kafka_flow(tmp_path, tag, request.getfixturevalue("kafka_bootstrap"), nats_url)
    yield made
    for actor in made.actors:
        if actor.process.poll() is None:
            actor.process.kill()
    if made.bridge is not None:
        made.bridge.stop()
    delete_queues(lambda name: tag in name)


# ---------------------------------------------------------------- the phases


def mirror_verify_cutover(flow: Flow) -> tuple[Actor, Actor]:
    """Up to cutover with the producer moved to NATS and a kill -9; (producer, consumer)."""
    assert flow.bridge is not None
    consumer = flow.actor("consume", flow.kind, *flow.legacy_consume)
    producer = flow.actor("produce", flow.kind, *flow.legacy_produce)
    flow.bridge.start()  # mirror: the tap copies into JetStream, legacy consumers unaware
    wait_for("the mirror to copy", lambda: flow.stream_count() >= RATE)
    assert flow.phase()["routes"] == [f"{flow.name}.to-nats"]

    flow.step("advance")  # -> verify
    wait_for("messages inside the parity window", lambda: len(flow.produced()) >= 3 * RATE)
    flow.step("advance")  # -> cutover: parity held, lag below max_lag
    status = flow.phase()
    assert status["phase"] == "cutover"
    assert status["routes"] == [f"{flow.name}.to-nats", f"{flow.name}.to-legacy"]
    _, metrics = flow.bridge.get("/metrics")  # the running bridge follows the reload
    assert f'natsbridge_migration_phase{{migration="{flow.name}",phase="cutover"}} 1.0' in metrics
    assert f'natsbridge_migration_parity_ok{{migration="{flow.name}"}} 1.0' in metrics

    producer.stop()  # the producer moves to NATS, numbering on
    last = max(flow.produced(), default=0)
    producer = flow.actor("produce", "nats", "--subject", flow.subject, "--first", str(last + 1))
    wait_for(
        "NATS-produced messages at the legacy consumer",
        lambda: max(flow.consumed(), default=0) > last,
    )
    flow.bridge.kill()  # kill -9 in the middle of cutover
    time.sleep(1.0)  # messages pile up on both sides while no bridge runs
    flow.bridge.start()  # reads cutover from the data dir
    wait_for(
        "the restarted bridge to catch up",
        lambda: max(flow.consumed(), default=0) >= max(flow.produced(), default=0) - RATE,
    )
    return producer, consumer


def assert_counts(flow: Flow, extra_duplicates: float) -> Counter[int]:
    produced, consumed = flow.produced(), flow.consumed()
    assert sorted(produced) == list(range(1, len(produced) + 1)), "producers lost a number"
    seen = Counter(consumed)
    missing = set(produced) - set(seen)
    assert not missing, f"{len(missing)} produced but never consumed: {sorted(missing)[:20]}"
    duplicates = sum(count - 1 for count in seen.values())
    bound = IN_FLIGHT + extra_duplicates
    assert duplicates <= bound, f"{duplicates} duplicates, more than {bound}"
    print(f"{flow.kind}: {len(produced)} produced, {len(consumed)} consumed, {duplicates} dup")
    return seen


def test_migration_forward_to_done(flow: Flow) -> None:
    producer, consumer = mirror_verify_cutover(flow)
    consumer.stop()  # the consumer moves to NATS, starting a margin before it stopped
    since = time.time() - MARGIN_S
    consumer = flow.actor(
        "consume", "nats", "--subject", flow.subject, "--stream", flow.stream,
        "--durable", f"app-{flow.stream}", "--since", str(since),
    )  # fmt: skip
    flow.step("advance")  # -> retire: the mirror copied everything
    assert flow.phase()["routes"] == [f"{flow.name}.to-nats"]
    flow.step("advance")  # -> done
    status = flow.phase()
    assert (status["phase"], status["routes"], status["next"]) == ("done", [], None)
    producer.stop()
    last = max(flow.produced(), default=0)
    wait_for("the NATS consumer to read the last message", lambda: last in flow.consumed())
    consumer.stop()
    assert_counts(flow, extra_duplicates=RATE * (MARGIN_S + 1))
    history = [(c["from"], c["to"]) for c in flow.phase()["history"]]
    assert history[-2:] == [("cutover", "retire"), ("retire", "done")]


def test_migration_rolled_back_from_cutover(flow: Flow) -> None:
    producer, consumer = mirror_verify_cutover(flow)
    producer.stop()  # the producer moves back to the legacy broker
    last = max(flow.produced(), default=0)
    producer = flow.actor("produce", flow.kind, *flow.legacy_produce, "--first", str(last + 1))
    flow.step("rollback", "--to", "mirror")  # once to-legacy delivered what NATS got
    status = flow.phase()
    assert (status["phase"], status["routes"]) == ("mirror", [f"{flow.name}.to-nats"])
    wait_for(
        "legacy messages after the rollback", lambda: max(flow.consumed(), default=0) > last + RATE
    )
    producer.stop()
    last = max(flow.produced(), default=0)
    wait_for("the legacy consumer to read the last message", lambda: last in flow.consumed())
    consumer.stop()
    assert_counts(flow, extra_duplicates=0)
