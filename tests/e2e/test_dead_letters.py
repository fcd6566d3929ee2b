"""Dead letters, first-class: to a JetStream stream or a Kafka topic (`dead_letters:`),
held un-acked while that destination fails, replayed from there while running, one
warning line per burst, and `natsbridge dlq ls|show|replay|purge` on the running bridge
(issue 20, item 2).

Dead letters are made the simplest way any source allows: `max_payload` refuses the big
messages at intake (PayloadTooLarge); raising it and reloading makes them mappable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig

from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count
from tests.e2e.test_kafka_bridge import create_topic, read_topic, stream_messages
from tests.e2e.test_rabbitmq_bridge import Rabbit, wait_for

SMALL, BIG = b"s" * 10, b"B" * 500
LIMIT = 100


def config(tag: str, nats_url: str, dead_letters: dict[str, Any] | None = None) -> dict[str, Any]:
    """JetStream stream SRC_<tag> -> core NATS out.<tag>, refusing payloads over LIMIT."""
    route: dict[str, Any] = {
        "name": f"dl-{tag}",
        "from": {
            "connection": "nats",
            "subject": f"src.{tag}.>",
            "jetstream": {"stream": f"SRC_{tag}"},
        },
        "to": {"connection": "nats", "subject": f"out.{tag}"},
        "max_payload": LIMIT,
        "retry": {"initial": 0.1, "max": 0.5},
    }
    if dead_letters is not None:
        route["dead_letters"] = dead_letters
    return {
        "version": 1,
        "bridge": {"id": f"dl-{tag}"},
        "connections": {"nats": {"kind": "nats", "servers": [nats_url]}},
        "routes": [route],
    }


async def publish(nats_url: str, tag: str, payloads: list[bytes]) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for i, payload in enumerate(payloads):
            await js.publish(f"src.{tag}.{i}", payload, stream=f"SRC_{tag}")
    finally:
        await nc.close()


async def add_stream(nats_url: str, name: str, subjects: list[str], max_msg_size: int = -1) -> None:
    """Create stream `name`, or change its max_msg_size when it exists."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        settings = StreamConfig(name=name, subjects=subjects, max_msg_size=max_msg_size)
        try:
            await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(settings)
        else:
            await js.update_stream(settings)
    finally:
        await nc.close()


async def delete_streams(nats_url: str, *names: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


def dlq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbridge", "dlq", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def reload_raising_the_limit(bridge: BridgeProcess, written: dict[str, Any]) -> None:
    """Make the dead letters mappable: raise max_payload and reload the running bridge."""
    written["routes"][0]["max_payload"] = 10 * LIMIT
    write_config(bridge.config, written)
    reload = subprocess.run(
        [sys.executable, "-m", "natsbridge", "reload", "--admin", bridge.admin],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert reload.returncode == 0, reload.stderr


def replay_destination(bridge: BridgeProcess, route: str, replayed: int) -> None:
    """`dlq replay ROUTE --destination` moves `replayed` dead letters, then none."""
    for expected in (replayed, 0):
        answer = dlq("replay", route, "--destination", "--admin", bridge.admin)
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert f"replayed {expected} dead letter" in answer.stdout, answer.stdout


@pytest.fixture
def bridge_of(tmp_path: Path) -> Any:
    started: list[BridgeProcess] = []

    def start(written: dict[str, Any], ready: bool = True) -> BridgeProcess:
        written["bridge"]["data_dir"] = str(tmp_path / "data")
        bridge = BridgeProcess(write_config(tmp_path / "bridge.yaml", written), tmp_path / "data")
        started.append(bridge)
        bridge.start(wait_ready=ready)
        return bridge

    yield start
    for bridge in started:
        bridge.stop()


def counters(bridge: BridgeProcess, route: str) -> dict[str, Any]:
    counted: dict[str, Any] = bridge.routes()[route]["counters"]
    return counted


@pytest.mark.nats
def test_dead_letters_to_a_jetstream_stream_wait_until_it_exists(
    nats_url: str, bridge_of: Any
) -> None:
    """The DLQ stream is missing at first: the big message stays un-acked at its source and
    the route says why; once the stream exists every dead letter lands there, with the
    Natsbridge-Dlq-* headers, and every small message is delivered: none lost."""
    tag = uuid.uuid4().hex[:8]
    route, dlq_stream = f"dl-{tag}", f"DLQ_{tag}"
    target = {
        "connection": "nats",
        "subject": f"dlq.{tag}",
        "jetstream": {"stream": dlq_stream, "create": False},
    }
    try:
        asyncio.run(add_stream(nats_url, f"SRC_{tag}", [f"src.{tag}.>"]))
        written = config(tag, nats_url, target)
        bridge = bridge_of(written, ready=False)
        bridge.wait_ready()
        payloads = [BIG if i % 4 == 0 else SMALL for i in range(40)]  # 10 big, 30 small
        asyncio.run(publish(nats_url, tag, payloads))
        wait_for(
            lambda: (
                "dead letters cannot be written to connection 'nats'"
                in (bridge.routes()[route]["last_error"] or {}).get("message", "")
            ),
            what="the route to say why",
        )
        assert counters(bridge, route)["dead_lettered"] == {}
        assert counters(bridge, route)["acked"] == 0  # the big one waits at its source
        asyncio.run(add_stream(nats_url, dlq_stream, [f"dlq.{tag}"]))
        wait_for(lambda: counters(bridge, route)["delivered"] == 30, what="30 delivered")
        wait_for(lambda: asyncio.run(stream_count(nats_url, dlq_stream)) == 10, what="10 dead")
        assert counters(bridge, route)["dead_lettered"] == {"PayloadTooLarge": 10}
        letters = asyncio.run(stream_messages(nats_url, dlq_stream))
        assert [m.data for m in letters] == [BIG] * 10
        headers = letters[0].headers
        assert headers["Natsbridge-Dlq-Route"] == route
        assert headers["Natsbridge-Dlq-Stage"] == "intake"
        assert headers["Natsbridge-Dlq-Reason"].startswith("PayloadTooLarge")
        assert f"subject 'src.{tag}.0'" in headers["Natsbridge-Dlq-Source"]
        datetime.fromisoformat(headers["Natsbridge-Dlq-Failed-At"])
        wait_for(lambda: counters(bridge, route)["acked"] == 40, what="all 40 acked")

        reload_raising_the_limit(bridge, written)
        replay_destination(bridge, route, 10)
        wait_for(lambda: counters(bridge, route)["delivered"] == 10, what="10 replayed delivered")
        assert asyncio.run(stream_count(nats_url, dlq_stream)) == 10  # read, not removed
    finally:
        asyncio.run(delete_streams(nats_url, f"SRC_{tag}", dlq_stream))


@pytest.mark.nats
def test_refused_at_delivery_and_replayed_to_the_address_it_had(
    nats_url: str, bridge_of: Any
) -> None:
    """The destination stream refuses the big messages (max_msg_size): dead letters of the
    delivery stage, with the mapped address; once the stream takes them, a replay from the
    DLQ stream delivers them there, without the Natsbridge-Dlq-* headers."""
    tag = uuid.uuid4().hex[:8]
    route, dlq_stream, out = f"dl-{tag}", f"DLQ_{tag}", f"OUT_{tag}"
    written = config(tag, nats_url, {"connection": "nats", "subject": f"dlq.{tag}"})
    written["routes"][0].pop("max_payload")
    written["routes"][0]["dead_letters"]["jetstream"] = {"stream": dlq_stream}
    written["routes"][0]["to"]["jetstream"] = {"stream": out, "create": False}
    try:
        asyncio.run(add_stream(nats_url, f"SRC_{tag}", [f"src.{tag}.>"]))
        asyncio.run(add_stream(nats_url, out, [f"out.{tag}"], max_msg_size=3 * LIMIT))
        bridge = bridge_of(written)
        asyncio.run(publish(nats_url, tag, [BIG, SMALL, BIG, SMALL]))
        wait_for(lambda: counters(bridge, route)["delivered"] == 2, what="2 delivered")
        wait_for(lambda: asyncio.run(stream_count(nats_url, dlq_stream)) == 2, what="2 dead")
        [letter, _] = asyncio.run(stream_messages(nats_url, dlq_stream))
        assert letter.headers["Natsbridge-Dlq-Stage"] == "delivery"
        assert letter.headers["Natsbridge-Dlq-Subject"] == f"out.{tag}"
        assert letter.headers["Natsbridge-Dlq-Reason"].startswith("PayloadTooLarge")

        asyncio.run(add_stream(nats_url, out, [f"out.{tag}"], max_msg_size=-1))
        bridge.terminate()  # the sink reads the stream's limits when it connects
        bridge.start()
        replay_destination(bridge, route, 2)
        wait_for(lambda: asyncio.run(stream_count(nats_url, out)) == 4, what="4 in the stream")
        stored = asyncio.run(stream_messages(nats_url, out))
        assert sorted(m.data for m in stored) == sorted([BIG, SMALL, BIG, SMALL])
        assert not any(k.startswith("Natsbridge-Dlq") for m in stored for k in m.headers or {})
    finally:
        asyncio.run(delete_streams(nats_url, f"SRC_{tag}", dlq_stream, out))


@pytest.mark.nats
@pytest.mark.kafka
def test_dead_letters_to_a_kafka_topic(nats_url: str, kafka_bootstrap: str, bridge_of: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    route, topic = f"dl-{tag}", f"dlq-{tag}"
    create_topic(kafka_bootstrap, topic, partitions=1)
    written = config(tag, nats_url, {"connection": "kafka", "topic": topic})
    written["connections"]["kafka"] = {"kind": "kafka", "bootstrap_servers": [kafka_bootstrap]}
    try:
        asyncio.run(add_stream(nats_url, f"SRC_{tag}", [f"src.{tag}.>"]))
        bridge = bridge_of(written)
        asyncio.run(publish(nats_url, tag, [BIG if i % 2 else SMALL for i in range(20)]))
        wait_for(lambda: counters(bridge, route)["delivered"] == 10, what="10 delivered")
        wait_for(lambda: counters(bridge, route)["acked"] == 20, what="20 acked")
        records = read_topic(kafka_bootstrap, topic)
        assert [r.value for r in records] == [BIG] * 10
        headers = {name: value.decode() for name, value in records[0].headers}
        assert headers["Natsbridge-Dlq-Route"] == route
        assert headers["Natsbridge-Dlq-Reason"].startswith("PayloadTooLarge")
        assert headers["Natsbridge-Dlq-Stage"] == "intake"

        reload_raising_the_limit(bridge, written)
        replay_destination(bridge, route, 10)
        wait_for(lambda: counters(bridge, route)["delivered"] == 10, what="10 replayed delivered")
    finally:
        asyncio.run(delete_streams(nats_url, f"SRC_{tag}"))


@pytest.mark.nats
@pytest.mark.amqp
def test_dead_letters_to_a_rabbitmq_exchange(nats_url: str, amqp_url: str, bridge_of: Any) -> None:
    """An exchange keeps nothing to read back: `replay --destination` says so, exit 1."""
    tag = uuid.uuid4().hex[:8]
    route, exchange = f"dl-{tag}", f"dlx-{tag}"
    rabbit = Rabbit(amqp_url)
    queue = rabbit.observe(exchange)
    target = {"connection": "rabbit", "exchange": exchange, "routing_key": "dead.{{subject}}"}
    written = config(tag, nats_url, target)
    written["connections"]["rabbit"] = {"kind": "amqp", "url": amqp_url}
    try:
        asyncio.run(add_stream(nats_url, f"SRC_{tag}", [f"src.{tag}.>"]))
        bridge = bridge_of(written)
        asyncio.run(publish(nats_url, tag, [BIG, SMALL, BIG]))
        letters = rabbit.drain(queue, 2)
        assert [body for _, body in letters] == [BIG, BIG]
        headers = letters[0][0].headers
        assert headers["Natsbridge-Dlq-Route"] == route
        assert headers["Natsbridge-Dlq-Reason"].startswith("PayloadTooLarge")
        answer = dlq("replay", route, "--destination", "--admin", bridge.admin)
        assert answer.returncode == 1
        assert f"its dead_letters destination (amqp exchange {exchange}" in answer.stderr
        assert "cannot be read back" in answer.stderr
    finally:
        rabbit.channel.queue_delete(queue)
        rabbit.channel.exchange_delete(exchange)
        rabbit.close()
        asyncio.run(delete_streams(nats_url, f"SRC_{tag}"))


@pytest.mark.nats
def test_dlq_commands_on_the_running_bridge(nats_url: str, bridge_of: Any) -> None:
    """Local dead letters: one warning line for the burst and a count; ls/show through
    the admin API; intake replay refused with the reason (exit 1) until a reload makes
    them mappable, then replayed while running and delivered; purge."""
    tag = uuid.uuid4().hex[:8]
    route = f"dl-{tag}"
    written = config(tag, nats_url)
    try:
        asyncio.run(add_stream(nats_url, f"SRC_{tag}", [f"src.{tag}.>"]))
        bridge = bridge_of(written)
        admin = ("--admin", bridge.admin)
        asyncio.run(publish(nats_url, tag, [BIG] * 5 + [SMALL] * 3))
        wait_for(lambda: counters(bridge, route)["delivered"] == 3, what="3 delivered")
        wait_for(lambda: "and 4 more dead-lettered in 10 s" in bridge.tail(200), what="count")
        lines = [json.loads(line) for line in bridge.tail(400).splitlines() if line[:1] == "{"]
        dead = [line for line in lines if line.get("event") == "dead_lettered"]
        assert len(dead) == 1 and dead[0]["level"] == "warning"

        listed = dlq("ls", *admin)
        assert listed.returncode == 0, listed.stderr
        assert [route, f"{route}.dead-letters", "5"] == listed.stdout.splitlines()[1].split()[:3]
        shown = dlq("show", route, *admin, "--json")
        assert len(json.loads(shown.stdout)["messages"]) == 5

        refused = dlq("replay", route, "--all", *admin)
        assert refused.returncode == 1
        assert "not replayed: #1: PayloadTooLarge" in refused.stdout
        assert "5 dead letters left" in refused.stdout

        written["routes"][0]["max_payload"] = 10 * LIMIT
        write_config(bridge.config, written)
        reload = subprocess.run(
            [sys.executable, "-m", "natsbridge", "reload", *admin],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert reload.returncode == 0, reload.stderr
        replayed = dlq("replay", route, "--seq", "1", "--seq", "2", *admin)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert f"replayed 2 messages from {route}.dead-letters into {route}" in replayed.stdout
        wait_for(lambda: counters(bridge, route)["delivered"] == 2, what="2 replayed delivered")

        purged = dlq("purge", route, "--seq", "3", *admin)
        assert "purged 1 dead letter" in purged.stdout and purged.returncode == 0
        rest = dlq("replay", route, "--all", *admin)
        assert rest.returncode == 0 and "replayed 2 messages" in rest.stdout, rest.stdout
        wait_for(lambda: counters(bridge, route)["delivered"] == 4, what="the rest delivered")
        assert "0 dead letters left" in rest.stdout
    finally:
        asyncio.run(delete_streams(nats_url, f"SRC_{tag}"))
