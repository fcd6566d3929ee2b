"""Hostile messages through every source -> sink pair of one `natsbridge run`, by counting ids.

Twenty-five routes, {RabbitMQ, Kafka, ActiveMQ STOMP, RabbitMQ STOMP, JetStream} x the
same, each from its own source address to its own destination, all `at_least_once` with
`max_payload: 64KiB`.
Each source gets its broker's hostile messages (tests/e2e/hostile.py) and then a tail
of ordinary ones. Then, per route: every id the source broker accepted is delivered or
dead-lettered with a reason, none twice, none lost; the tail arrives (the flow
continues); the process is up until SIGTERM and exits 0; /api/routes' counters add up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nats
import pika
import pytest
from kafka import KafkaAdminClient

from tests.e2e import hostile
from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.hostile import Case, Message
from tests.e2e.hostile_readers import (
    account_of,
    amqp_ids,
    dead_letters,
    jetstream_ids,
    kafka_ids,
    stomp_ids,
)
from tests.e2e.rabbitmq_admin import delete_queues

pytestmark = [pytest.mark.amqp, pytest.mark.kafka, pytest.mark.stomp, pytest.mark.nats]

KINDS = ("amqp", "kafka", "stomp", "rstomp", "nats")  # rstomp: RabbitMQ's STOMP plugin
CONNECTION = {
    "amqp": "rabbit",
    "kafka": "kafka",
    "stomp": "activemq",
    "rstomp": "rabbit-stomp",
    "nats": "nats",
}
ADDRESS = {  # each source's own address, rendered into the sink's address
    "amqp": "{{routing_key}}",
    "kafka": "{{key}}",
    "stomp": "{{destination}}",
    "rstomp": "{{destination}}",
    "nats": "{{wildcard(1)}}",
}
TAIL_SIZE = 5
SETTLE_TIMEOUT_S = 90.0
TERMINATE_TIMEOUT_S = 40  # the routes' drain_timeout is 10s
QUIET_S = 3.0  # counters unchanged this long, buffers empty: the routes are done


class Names:
    """Every broker-side name of one run, unique to it."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def route(self, src: str, dst: str) -> str:
        return f"h-{src}-{dst}-{self.tag}"

    def source(self, src: str, dst: str) -> str:
        """The address a producer sends to (before its hostile suffix)."""
        return {
            "amqp": f"hi-{self.tag}-amqp-{dst}",  # exchange
            "kafka": f"hi-{self.tag}-kafka-{dst}",  # topic
            "stomp": f"/queue/hi-{self.tag}-stomp-{dst}",  # destination prefix
            "rstomp": f"/topic/hi-{self.tag}-rstomp-{dst}",
            "nats": f"hi.{self.tag}.{dst}",  # subject prefix
        }[src]

    def sink(self, src: str, dst: str) -> str:
        """Where a reader finds the route's output."""
        return {
            "amqp": f"ho-{self.tag}-{src}-amqp",  # exchange; its observer queue adds ".observe"
            "kafka": f"ho-{self.tag}-{src}-kafka",  # topic
            "stomp": f"/queue/ho-{self.tag}-{src}-stomp",
            "rstomp": f"/queue/ho-{self.tag}-{src}-rstomp",
            "nats": f"HO_{self.tag}_{src}",  # stream
        }[dst]


def route_config(names: Names, src: str, dst: str) -> dict[str, Any]:
    source: dict[str, Any] = {"connection": CONNECTION[src]}
    where = names.source(src, dst)
    if src == "amqp":
        source |= {"exchange": where, "binding_keys": ["#"]}
    elif src == "kafka":
        source |= {"topics": [where]}
    elif src == "stomp":
        source |= {"destination": f"{where}.>"}  # ActiveMQ's wildcard
    elif src == "rstomp":
        source |= {"destination": f"{where}.#"}  # RabbitMQ's (AMQP topic rules)
    else:
        source |= {"subject": f"{where}.*", "jetstream": {"stream": f"HI_{names.tag}_{dst}"}}
    sink: dict[str, Any] = {"connection": CONNECTION[dst]}
    out = names.sink(src, dst)
    if dst == "amqp":
        sink |= {"exchange": out, "routing_key": ADDRESS[src]}
    elif dst == "kafka":
        sink |= {"topic": out, "key": ADDRESS[src], "create_topic": {"partitions": 1}}
    elif dst in ("stomp", "rstomp"):
        sink |= {"destination": out}
    else:
        sink |= {
            "subject": f"ho.{names.tag}.{src}.{ADDRESS[src]}",
            "jetstream": {"stream": out},
        }
    return {
        "name": names.route(src, dst),
        "from": source,
        "to": sink,
        "delivery": "at_least_once",
        "max_payload": "64KiB",
        "retry": {"initial": "100ms", "max": "2s"},
    }


def bridge_config(names: Names, urls: dict[str, str], login: tuple[str, str]) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {
            "id": f"hostile-{names.tag}",
            "data_dir": "${env:NATSBRIDGE_DATA_DIR}",
            "drain_timeout": "10s",
        },
        "connections": {
            "rabbit": {"kind": "amqp", "url": urls["amqp"]},
            "kafka": {"kind": "kafka", "bootstrap_servers": [urls["kafka"]]},
            "activemq": {
                "kind": "stomp",
                "url": urls["stomp"],
                "dialect": "activemq",
                "login": login[0],
                "passcode": login[1],
            },
            "rabbit-stomp": {
                "kind": "stomp",
                "url": urls["rstomp"],
                "dialect": "rabbitmq",
                "login": "guest",
                "passcode": "guest",
            },
            "nats": {"kind": "nats", "servers": [urls["nats"]]},
        },
        "routes": [route_config(names, src, dst) for src in KINDS for dst in KINDS],
    }


def hostile_cases(src: str, tag: str) -> tuple[list[Case], dict[str, str]]:
    """The cases `src` sends, and {kind: why not} for those its client cannot express."""
    own = {
        "amqp": hostile.amqp_cases(tag),
        "kafka": hostile.kafka_cases(),
        "stomp": hostile.stomp_cases(),
        "rstomp": hostile.stomp_cases(),
        "nats": hostile.nats_cases(),
    }[src]
    unsendable_of: Callable[[Case], str | None] = {
        "amqp": lambda case: None,
        "kafka": hostile.kafka_unsendable,
        "stomp": hostile.stomp_unsendable,
        "rstomp": hostile.stomp_unsendable,
        "nats": hostile.nats_unsendable,
    }[src]
    cases, skipped = [], {}
    for case in [*hostile.common_cases(tag), *own]:
        why = unsendable_of(case)
        if why is None:
            cases.append(case)
        else:
            skipped[case.kind] = why
    return cases, skipped


@pytest.fixture
def tag(kafka_bootstrap: str, nats_url: str) -> Iterator[str]:
    """A tag for this run's names; its queues, topics and streams are deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    yield tag
    delete_queues(lambda name: tag in name)
    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.delete_topics([t for t in admin.list_topics() if tag in t])
        finally:
            admin.close()

    async def drop_streams() -> None:
        nc = await nats.connect(nats_url)
        try:
            for name in await nc.jsm().streams_info():
                if tag in name.config.name:
                    await nc.jsm().delete_stream(name.config.name)
        finally:
            await nc.close()

    with contextlib.suppress(Exception):
        asyncio.run(drop_streams())


def settle(bridge: BridgeProcess, expected: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Wait until every route has received what was sent and holds nothing, or time out.

    Returns the last /api/routes (empty when the process is gone).
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last: tuple[Any, ...] = ()
    quiet_since = time.monotonic()
    routes: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        assert bridge.process is not None
        if bridge.process.poll() is not None:
            return routes
        status, body = bridge.get("/api/routes")
        if status == 200:
            routes = {route["name"]: route for route in body["routes"]}
            now = tuple(json.dumps(r["counters"], sort_keys=True) for r in routes.values())
            if now != last:
                last, quiet_since = now, time.monotonic()
            idle = all(r["buffer"]["depth"] == 0 and r["in_flight"] == 0 for r in routes.values())
            received = all(
                routes[name]["counters"]["received"] >= count for name, count in expected.items()
            )
            if idle and received and time.monotonic() - quiet_since >= QUIET_S:
                return routes
        time.sleep(0.5)
    return routes


def counter_problems(route: dict[str, Any]) -> list[str]:
    """received = delivered + dead-lettered + looped + dropped, once nothing is in flight."""
    c = route["counters"]
    dead = sum(c["dead_lettered"].values())
    settled = c["delivered"] + dead + c["looped"] + c["dropped"]
    if c["received"] == settled and route["buffer"]["depth"] == 0:
        return []
    return [
        f"/api/routes counters do not add up: received {c['received']} != delivered "
        f"{c['delivered']} + dead_lettered {c['dead_lettered']} + looped {c['looped']} + "
        f"dropped {c['dropped']} (buffer depth {route['buffer']['depth']}, in flight "
        f"{route['in_flight']}, state {route['state']}, last error {route['last_error']})"
    ]


def resends(route: dict[str, Any] | None) -> int:
    """Reconnects and redeliveries the route counted (unknown when the process is gone)."""
    if route is None:
        return 0
    return int(route["counters"]["reconnects"]) + int(route["counters"]["redelivered"])


def log_lines(bridge: BridgeProcess, limit: int = 40) -> list[str]:
    """The bridge's WARNING and worse lines, each distinct message once."""
    seen: dict[str, str] = {}
    text = bridge.log.read_text(errors="replace") if bridge.log.exists() else ""
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if "Traceback" in line or "Error" in line or line.startswith("natsbridge:"):
                seen.setdefault(line[:160], line[:300])
            continue
        if str(record.get("level")).upper() in ("WARNING", "ERROR", "CRITICAL"):
            key = f"{record.get('route')}|{str(record.get('msg'))[:80]}"
            where = record.get("route") or record.get("logger")
            seen.setdefault(key, f"{record['level']} {where}: {record['msg']}"[:400])
    return list(seen.values())[:limit]


def test_hostile_messages_through_every_pair(
    amqp_url: str,
    kafka_bootstrap: str,
    stomp_activemq_url: str,
    stomp_rabbitmq_url: str,
    activemq_credentials: tuple[str, str],
    nats_url: str,
    tag: str,
    tmp_path: Path,
) -> None:
    names = Names(tag)
    urls = {
        "amqp": amqp_url,
        "kafka": kafka_bootstrap,
        "stomp": stomp_activemq_url,
        "rstomp": stomp_rabbitmq_url,
        "nats": nats_url,
    }
    login, passcode = activemq_credentials
    pairs = [(src, dst) for src in KINDS for dst in KINDS]

    # What must exist before the bridge reads or writes: Kafka source topics (one
    # partition: one order), and an observer queue on every AMQP sink exchange.
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics(
            {
                names.source("kafka", dst): {"num_partitions": 1, "replication_factor": 1}
                for dst in KINDS
            },
            wait_for_metadata=True,
        )
    finally:
        admin.close()
    rabbit = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = rabbit.channel()
    for src in KINDS:
        exchange = names.sink(src, "amqp")
        channel.exchange_declare(exchange, "topic", durable=True)
        channel.queue_declare(f"{exchange}.observe", durable=True)
        channel.queue_bind(f"{exchange}.observe", exchange, "#")
    rabbit.close()

    config = write_config(tmp_path / "hostile.yaml", bridge_config(names, urls, (login, passcode)))
    bridge = BridgeProcess(config, tmp_path / "data")
    batches: dict[tuple[str, str], list[Message]] = {}
    tails: dict[tuple[str, str], list[Message]] = {}
    skipped: dict[str, dict[str, str]] = {}
    for src, dst in pairs:
        cases, skipped[src] = hostile_cases(src, tag)
        batches[src, dst] = hostile.messages(f"{src}>{dst}", cases)
        tails[src, dst] = hostile.messages(
            f"{src}>{dst}", [hostile.TAIL] * TAIL_SIZE, first=len(cases)
        )

    def produce(src: str, dst: str, batch: list[Message]) -> dict[str, str]:
        where = names.source(src, dst)
        if src == "amqp":
            return hostile.produce_amqp(amqp_url, where, batch)
        if src == "kafka":
            return hostile.produce_kafka(kafka_bootstrap, where, batch)
        if src == "stomp":
            return hostile.produce_stomp(stomp_activemq_url, login, passcode, where, batch)
        if src == "rstomp":
            return hostile.produce_stomp(stomp_rabbitmq_url, "guest", "guest", where, batch)
        return hostile.produce_nats(nats_url, where, batch)

    def produce_all(which: dict[tuple[str, str], list[Message]]) -> dict[str, str]:
        # One thread per source broker; each sends its four routes' messages in turn.
        def one_source(src: str) -> dict[str, str]:
            out: dict[str, str] = {}
            for dst in KINDS:
                out |= produce(src, dst, which[src, dst])
            return out

        with ThreadPoolExecutor(len(KINDS)) as pool:
            results = list(pool.map(one_source, KINDS))
        return {hid: why for result in results for hid, why in result.items()}

    try:
        bridge.start()
        refused = produce_all(batches)
        refused |= produce_all(tails)
        expected = {
            names.route(src, dst): sum(
                1 for m in batches[src, dst] + tails[src, dst] if m.hid not in refused
            )
            for src, dst in pairs
        }
        routes = settle(bridge, expected)
        assert bridge.process is not None
        exit_before_sigterm = bridge.process.poll()
        try:
            exit_code: int | None = bridge.terminate(timeout=TERMINATE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            exit_code = None  # still running: reported below, killed by stop()
    finally:
        bridge.stop()

    def delivered(src: str, dst: str) -> list[str]:
        out = names.sink(src, dst)
        if dst == "amqp":
            return amqp_ids(amqp_url, f"{out}.observe")
        if dst == "kafka":
            return kafka_ids(kafka_bootstrap, out)
        if dst == "stomp":
            return stomp_ids(stomp_activemq_url, login, passcode, out)
        if dst == "rstomp":
            return stomp_ids(stomp_rabbitmq_url, "guest", "guest", out)
        return jetstream_ids(nats_url, out)

    dead = dead_letters(bridge.data_dir)
    with ThreadPoolExecutor(8) as pool:  # a STOMP reader waits 3 s for stragglers
        found = dict(zip(pairs, pool.map(lambda pair: delivered(*pair), pairs), strict=True))
    report: list[str] = []
    for src, dst in pairs:
        name = names.route(src, dst)
        account = account_of(
            name,
            batches[src, dst],
            tails[src, dst],
            {
                m.hid: refused[m.hid]
                for m in batches[src, dst] + tails[src, dst]
                if m.hid in refused
            },
            found[src, dst],
            dead.get(f"{name}.dead-letters", {}),
            resends(routes.get(name)),
        )
        problems = account.problems()
        if name in routes:
            problems += counter_problems(routes[name])
        elif exit_before_sigterm is None:
            problems.append("not in /api/routes")
        report.append(account.summary())
        report += [f"    {problem}" for problem in problems]

    process = []
    if exit_before_sigterm is not None:
        process.append(f"the bridge EXITED with {exit_before_sigterm} before SIGTERM:")
        process += [f"    {line}" for line in bridge.tail(12).splitlines()]
    if exit_code is None:
        process.append(
            f"the bridge was still running {TERMINATE_TIMEOUT_S}s after SIGTERM "
            "(drain_timeout 10s): killed"
        )
    elif exit_code != 0 and exit_before_sigterm is None:
        process.append(f"the bridge exited with {exit_code} after SIGTERM (want 0)")
    not_sent = [
        f"{src}: {kind}: {why}" for src, kinds in skipped.items() for kind, why in kinds.items()
    ]
    refusals = [f"{hid}: {why}" for hid, why in sorted(refused.items())]
    failed = bool(process) or any(line.startswith("    ") for line in report)
    print(
        "\n".join(
            ["not sendable by the client:", *not_sent, "refused by the source broker:", *refusals]
        )
    )
    print("\n".join(report))
    assert not failed, "\n".join(
        [
            *process,
            *report,
            "bridge log (WARNING and worse, distinct):",
            *log_lines(bridge),
            f"(not sendable: {len(not_sent)} cases; refused by the source broker: "
            f"{len(refusals)} messages; both listed on stdout)",
        ]
    )
