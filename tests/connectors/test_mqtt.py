"""The MQTT connector on a real Mosquitto: round trips, QoS 1 redelivery, retain, hostile input."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from natsbridge.bridge.config import load_config
from natsbridge.bridge.errors import ConnectionLost, MappingError, PermanentError, RetryableError
from natsbridge.connectors.mqtt import connector
from natsbridge.connectors.mqtt.sink import MqttTopicSink
from natsbridge.connectors.mqtt.source import MqttTopicSource
from natsbridge.sdk import Envelope, Incoming
from tests.connectors.helpers import take_shared
from tests.connectors.mqtt_helpers import mqtt_auth, mqtt_tls, mqtt_url, raw_client

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(120)]
Test = TypeVar("Test", bound=Callable[..., Coroutine[Any, Any, None]])


def scenario(test: Test) -> Callable[..., None]:
    """Run the async test body with asyncio.run (no asyncio plugin for pytest here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@pytest.fixture(scope="module")
def url() -> str:
    """The Mosquitto under test."""
    return mqtt_url()


def _load(tmp: Path, url: str, body: dict[str, Any], **connection: Any) -> tuple[Any, Any, Any]:
    conn = {"kind": "mqtt", "url": url, **connection}
    nats = {"kind": "nats", "servers": ["nats://127.0.0.1:4222"]}
    path = tmp / f"{body['name']}.yaml"
    path.write_text(
        "version: 1\nbridge: {id: test-bridge}\n"
        f"connections:\n  mqtt: {json.dumps(conn)}\n  nats: {json.dumps(nats)}\n"
        f"routes:\n  - {json.dumps(body)}\n"
    )
    config = load_config(path)
    [route] = config.routes
    return route, config.connections["mqtt"], config.bridge


def make_source(
    tmp: Path, url: str, name: str, topics: list[str], **connection: Any
) -> MqttTopicSource:
    body = {
        "name": name,
        "from": {"connection": "mqtt", "topics": topics, "qos": 1},
        "to": {"connection": "nats", "subject": "out.{{topic}}"},
    }
    source = connector.source(*_load(tmp, url, body, client_id=name, **connection))
    assert isinstance(source, MqttTopicSource)
    return source


def make_sink(
    tmp: Path, url: str, name: str, retain: bool = False, **connection: Any
) -> MqttTopicSink:
    body = {
        "name": name,
        "from": {"connection": "nats", "subject": "in.>"},
        "to": {"connection": "mqtt", "topic": "x/{{subject}}", "qos": 1, "retain": retain},
    }
    sink = connector.sink(*_load(tmp, url, body, client_id=name, **connection))
    assert isinstance(sink, MqttTopicSink)
    return sink


async def take(source: MqttTopicSource, count: int, ack: bool = False) -> list[Incoming]:
    """Exactly `count` messages, acked as they come with `ack` (fails on fewer within 10 s).

    Without acks a broker stops at its in-flight limit (Mosquitto: 20 for MQTT 3.1.1).
    """
    got: list[Incoming] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while len(got) < count and loop.time() < deadline:
        batch = await source.receive(count - len(got), 0.5)
        for incoming in batch if ack else ():
            incoming.ack(None)
        got += batch
    assert len(got) == count, f"received {len(got)} of {count}"
    return got


async def nothing_more(source: MqttTopicSource) -> None:
    assert list(await source.receive(10, 1.0)) == []


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@scenario
async def test_round_trip_sink_to_source(
    tmp_path: Path, url: str, unique_name: str, protocol: str
) -> None:
    source = make_source(
        tmp_path, url, f"{unique_name}-in", [f"{unique_name}/+/t"], protocol=protocol
    )
    sink = make_sink(tmp_path, url, f"{unique_name}-out", protocol=protocol)
    await source.connect()
    await sink.connect()
    try:
        headers = {
            "X-Tenant": ["a", "b"],
            "Mqtt-Content-Type": ["application/json"],
            "Mqtt-Correlation-Data": ["base64:/wAB"],
            "Mqtt-Response-Topic": ["replies/1"],
        }
        envelopes = [
            Envelope(subject=f"{unique_name}/p{i}/t", payload=b"\x00bin%d" % i, headers=headers)
            for i in range(50)
        ]
        assert await sink.send_batch(envelopes) == [None] * 50
        got = await take(source, 50, ack=True)
        assert [g.envelope.payload for g in got] == [e.payload for e in envelopes]  # in order
        first = got[0].envelope
        assert first.subject == f"{unique_name}/p0/t"
        assert first.origin is not None and first.origin.topic == f"{unique_name}/p0/t"
        assert first.headers["Mqtt-Topic"] == [f"{unique_name}/p0/t"]
        if protocol == "5":
            for name, values in headers.items():
                assert first.headers[name] == values
        else:
            assert set(first.headers) == {"Mqtt-Topic"}  # 3.1.1 carries no properties
    finally:
        await sink.close()
        await source.close()


@scenario
async def test_qos1_unacked_messages_come_back_after_a_reconnect(
    tmp_path: Path, url: str, unique_name: str
) -> None:
    """PUBACK only on ack, in arrival order: acking the 2nd of 3 alone PUBACKs nothing."""
    source = make_source(tmp_path, url, unique_name, [f"{unique_name}/#"])
    await source.connect()  # creates the persistent session and its subscription
    try:
        with raw_client(url) as pub:
            for i in range(3):
                pub.publish(f"{unique_name}/m", b"m%d" % i, qos=1).wait_for_publish(5)  # type: ignore[attr-defined]
        got = await take(source, 3)
        got[1].ack(None)  # held back behind the unacked first message (MQTT 4.6)
        await source.close()
        await source.connect()
        again = await take(source, 3)
        assert [g.envelope.payload for g in again] == [b"m0", b"m1", b"m2"]
        again[0].ack(None)
        again[1].ack(PermanentError("dead-lettered"))  # PUBACKed: it is in the dead letters
        again[2].ack(None)
        await source.close()
        await source.connect()
        await nothing_more(source)
    finally:
        await source.close()


@scenario
async def test_a_retryable_nack_makes_the_broker_redeliver(
    tmp_path: Path, url: str, unique_name: str
) -> None:
    source = make_source(tmp_path, url, unique_name, [f"{unique_name}/+"])
    await source.connect()
    try:
        with raw_client(url) as pub:
            pub.publish(f"{unique_name}/a", b"once", qos=1).wait_for_publish(5)  # type: ignore[attr-defined]
        [first] = await take(source, 1)
        first.ack(RetryableError("buffer busy"))
        [second] = await take(source, 1)  # receive() reconnected the session
        assert second.envelope.payload == b"once"
        second.ack(None)
        await source.close()
        await source.connect()
        await nothing_more(source)
    finally:
        await source.close()


@scenario
async def test_messages_published_while_the_source_is_away_are_kept(
    tmp_path: Path, url: str, unique_name: str
) -> None:
    source = make_source(tmp_path, url, unique_name, [f"{unique_name}/#"])
    await source.connect()
    await source.close()
    with raw_client(url) as pub:
        for i in range(100):
            pub.publish(f"{unique_name}/x", b"%d" % i, qos=1)
        pub.publish(f"{unique_name}/x", b"last", qos=1).wait_for_publish(5)  # type: ignore[attr-defined]
    await source.connect()
    try:
        got = await take(source, 101, ack=True)
        assert [g.envelope.payload for g in got] == [b"%d" % i for i in range(100)] + [b"last"]
    finally:
        await source.close()


@scenario
async def test_retained_message_reaches_a_later_subscriber(
    tmp_path: Path, url: str, unique_name: str
) -> None:
    sink = make_sink(tmp_path, url, f"{unique_name}-out", retain=True)
    await sink.connect()
    try:
        topic = f"{unique_name}/state"
        assert await sink.send_batch([Envelope(subject=topic, payload=b"on")]) == [None]
    finally:
        await sink.close()
    source = make_source(tmp_path, url, f"{unique_name}-in", [topic])
    await source.connect()
    try:
        [got] = await take(source, 1)
        assert got.envelope.payload == b"on"
        assert got.envelope.headers["Mqtt-Retain"] == ["true"]
        got.ack(None)
    finally:
        await source.close()
        with raw_client(url) as pub:  # clear the retained message
            pub.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)  # type: ignore[attr-defined]


@scenario
async def test_hostile_messages_are_refused_one_by_one(
    tmp_path: Path, url: str, unique_name: str
) -> None:
    """A topic or header an MQTT string cannot carry fails that message only; counted."""
    source = make_source(tmp_path, url, f"{unique_name}-in", [f"{unique_name}/#"])
    sink = make_sink(tmp_path, url, f"{unique_name}-out")
    await source.connect()
    await sink.connect()
    try:
        good = f"{unique_name}/ok"
        batch = [
            Envelope(subject=good, payload=b"1"),
            Envelope(subject=f"{unique_name}/\x01", payload=b"control in topic"),
            Envelope(subject=f"{unique_name}/+", payload=b"wildcard in topic"),
            Envelope(subject=good, payload=b"x", headers={"X-Bad": ["a\x85b"]}),
            Envelope(subject=good, payload=b"y", headers={"Mqtt-Response-Topic": ["r/#"]}),
            Envelope(subject="", payload=b"empty topic"),
            Envelope(subject=good, payload=b"2"),
        ]
        results = await sink.send_batch(batch)
        assert results[0] is None and results[-1] is None
        assert all(isinstance(r, MappingError) for r in results[1:-1]), results
        # the connection survived them: nothing reached Mosquitto that it would drop us over
        assert await sink.send_batch([Envelope(subject=good, payload=b"3")]) == [None]
        got = await take(source, 3)
        assert [g.envelope.payload for g in got] == [b"1", b"2", b"3"]
        for g in got:
            g.ack(None)
    finally:
        await sink.close()
        await source.close()


@scenario
async def test_a_subscription_left_in_the_session_is_dead_lettered_not_dropped(
    tmp_path: Path, url: str, unique_name: str
) -> None:
    old = make_source(tmp_path, url, unique_name, [f"{unique_name}/old/#"])
    await old.connect()
    await old.close()
    new = make_source(tmp_path, url, unique_name, [f"{unique_name}/new/#"])  # same client id
    await new.connect()
    try:
        with raw_client(url) as pub:
            pub.publish(f"{unique_name}/old/x", b"stale", qos=1).wait_for_publish(5)  # type: ignore[attr-defined]
        [got] = await take(new, 1)
        assert got.envelope.payload == b"stale"
        assert isinstance(got.error, MappingError) and "matches none of" in str(got.error)
        got.ack(None)  # the runtime dead-letters it, then acks
    finally:
        await new.close()


@scenario
async def test_an_unreachable_broker_is_retryable(tmp_path: Path, unique_name: str) -> None:
    source = make_source(tmp_path, "mqtt://127.0.0.1:9", unique_name, ["a/#"])
    with pytest.raises(ConnectionLost):
        await source.connect()
    sink = make_sink(tmp_path, "mqtt://127.0.0.1:9", unique_name)
    with pytest.raises(RetryableError):
        await sink.connect()
    assert (await sink.send_batch([Envelope(subject="a", payload=b"")]))[
        0
    ].__class__ is ConnectionLost


@scenario
async def test_a_wrong_password_is_permanent_and_never_shown(
    tmp_path: Path, unique_name: str
) -> None:
    """services.sh's Mosquitto takes NATSBRIDGE_MQTT_USER/PASSWORD on NATSBRIDGE_MQTT_AUTH_URL."""
    url, user, password = mqtt_auth()
    wrong = "not-the-password-" + unique_name[-6:]
    source = make_source(tmp_path, url, f"{unique_name}-in", ["a/#"], username=user, password=wrong)
    with pytest.raises(PermanentError) as refused:
        await source.connect()
    assert "refused" in str(refused.value) and wrong not in str(refused.value)
    sink = make_sink(tmp_path, url, f"{unique_name}-out", username=user, password=password)
    source = make_source(
        tmp_path, url, f"{unique_name}-in", [f"{unique_name}/#"], username=user, password=password
    )
    await source.connect()
    await sink.connect()
    try:
        topic = f"{unique_name}/auth"
        assert await sink.send_batch([Envelope(subject=topic, payload=b"in")]) == [None]
        [got] = await take(source, 1, ack=True)
        assert got.envelope.payload == b"in"
    finally:
        await sink.close()
        await source.close()


@scenario
async def test_tls_with_the_ca_file_and_a_refusal_without_it(
    tmp_path: Path, unique_name: str
) -> None:
    """services.sh's Mosquitto serves TLS (NATSBRIDGE_MQTT_TLS_URL) with a dev CA."""
    url, ca_file = mqtt_tls()
    untrusted = make_sink(tmp_path, url, f"{unique_name}-x")  # mqtts:// with the system CAs
    with pytest.raises(PermanentError, match="not trusted"):
        await untrusted.connect()
    tls = {"ca_file": ca_file}
    source = make_source(tmp_path, url, f"{unique_name}-in", [f"{unique_name}/#"], tls=tls)
    sink = make_sink(tmp_path, url, f"{unique_name}-out", tls=tls)
    await source.connect()
    await sink.connect()
    try:
        topic = f"{unique_name}/secret"
        assert await sink.send_batch([Envelope(subject=topic, payload=b"tls")]) == [None]
        [got] = await take(source, 1, ack=True)
        assert got.envelope.payload == b"tls"
    finally:
        await sink.close()
        await source.close()


@scenario
async def test_replicas_share_a_route_through_a_shared_subscription(
    tmp_path: Path, url: str, unique_name: str
) -> None:
    """Two replicas of one config (bridge.replica a and b): each message goes to one."""
    body = {
        "name": unique_name,
        "from": {"connection": "mqtt", "topics": [f"{unique_name}/#"], "qos": 1},
        "to": {"connection": "nats", "subject": "out.{{topic}}"},
    }
    route, connection, bridge = _load(tmp_path, url, body)
    replicas = [
        connector.source(route, connection, bridge.model_copy(update={"replica": name}))
        for name in ("a", "b")
    ]
    assert [r.client_id for r in replicas] == [  # type: ignore[attr-defined]
        f"natsbridge-test-bridge:{unique_name}:in:{name}" for name in ("a", "b")
    ]
    sink = make_sink(tmp_path, url, f"{unique_name}-out")
    for replica in replicas:
        await replica.connect()
    await sink.connect()
    try:
        sent = [Envelope(subject=f"{unique_name}/{i}", payload=b"%d" % i) for i in range(200)]
        assert await sink.send_batch(sent) == [None] * 200
        taken = await take_shared(replicas, 200)
        assert sorted(taken[0] + taken[1]) == sorted(e.payload for e in sent)
        assert taken[0] and taken[1], "one replica took everything"
    finally:
        await sink.close()
        for replica in replicas:
            await replica.close()
