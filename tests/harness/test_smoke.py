"""Smoke round trips through the raw client libraries: they prove the harness, not the bridge.

Each test publishes N messages with unique ids and binary payloads to a fresh destination
and checks that exactly those N come back, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import queue
import time
from urllib.parse import urlsplit

import pytest

N = 1_000
TIMEOUT = 60.0


def make_messages(tag: str, n: int = N) -> dict[str, bytes]:
    """n messages keyed by unique id; payloads of varied sizes with every byte value in them."""
    messages = {}
    for i in range(n):
        msg_id = f"{tag}-{i:05d}"
        seed = hashlib.sha256(msg_id.encode()).digest()
        body = (seed * (1 + i % 40))[: 32 + (i * 37) % 1200]
        messages[msg_id] = msg_id.encode() + b"|" + bytes(range(256)) + body
    return messages


def assert_same(sent: dict[str, bytes], received: list[tuple[str, bytes]]) -> None:
    """All sent messages arrived exactly once with identical payloads."""
    ids = [msg_id for msg_id, _ in received]
    dupes = {i for i in ids if ids.count(i) > 1} if len(ids) != len(set(ids)) else set()
    assert not dupes, f"duplicates: {sorted(dupes)[:5]}"
    missing = sent.keys() - set(ids)
    assert not missing, f"{len(missing)} of {len(sent)} missing, e.g. {sorted(missing)[:5]}"
    extra = set(ids) - sent.keys()
    assert not extra, f"unexpected ids {sorted(extra)[:5]}"
    bad = [msg_id for msg_id, payload in received if sent[msg_id] != payload]
    assert not bad, f"{len(bad)} payloads differ, e.g. {bad[:5]}"


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


# --------------------------------------------------------------------------- RabbitMQ (AMQP)


@pytest.mark.amqp
def test_amqp_round_trip(amqp_url: str, unique_name: str) -> None:
    import pika

    sent = make_messages(unique_name)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(unique_name, durable=True)
        try:
            for msg_id, payload in sent.items():
                ch.basic_publish(
                    "",
                    unique_name,
                    payload,
                    pika.BasicProperties(message_id=msg_id, delivery_mode=2),
                    mandatory=True,
                )
            received = []
            for method, props, body in ch.consume(unique_name, inactivity_timeout=TIMEOUT):
                assert method is not None, f"timed out after {len(received)} messages"
                received.append((props.message_id, body))
                ch.basic_ack(method.delivery_tag)
                if len(received) == N:
                    break
            ch.cancel()
            assert_same(sent, received)
        finally:
            ch.queue_delete(unique_name)
    finally:
        conn.close()


# --------------------------------------------------------------------------- Kafka


def _kafka_round_trip(topic: str, **client_args: object) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    sent = make_messages(topic)
    admin = KafkaAdminClient(**client_args)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = KafkaProducer(acks="all", **client_args)
        try:
            futures = [producer.send(topic, key=k.encode(), value=v) for k, v in sent.items()]
            producer.flush(TIMEOUT)
            for f in futures:
                f.get(timeout=TIMEOUT)
        finally:
            producer.close()
        consumer = KafkaConsumer(
            topic,
            group_id=f"{topic}-group",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **client_args,
        )
        try:
            received: list[tuple[str, bytes]] = []
            deadline = time.monotonic() + TIMEOUT
            while len(received) < N and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=1000).values():
                    received += [(r.key.decode(), r.value) for r in records]
            consumer.commit()
        finally:
            consumer.close()
        assert_same(sent, received)
    finally:
        with contextlib.suppress(Exception):
            admin.delete_topics([topic])
        admin.close()


@pytest.mark.kafka
def test_kafka_round_trip(kafka_bootstrap: str, unique_name: str) -> None:
    _kafka_round_trip(unique_name, bootstrap_servers=kafka_bootstrap)


@pytest.mark.kafka
def test_kafka_scram_round_trip(kafka_scram, unique_name: str) -> None:  # type: ignore[no-untyped-def]
    _kafka_round_trip(
        unique_name,
        bootstrap_servers=kafka_scram.bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=kafka_scram.mechanism,
        sasl_plain_username=kafka_scram.username,
        sasl_plain_password=kafka_scram.password,
    )


@pytest.mark.kafka
def test_kafka_scram_rejects_wrong_password(kafka_scram) -> None:  # type: ignore[no-untyped-def]
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaTimeoutError

    # The broker drops the connection on a failed SCRAM login; kafka-python retries until
    # its bootstrap timeout. (test_kafka_scram_round_trip shows the right password works.)
    with pytest.raises(KafkaTimeoutError):
        KafkaAdminClient(
            bootstrap_servers=kafka_scram.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=kafka_scram.mechanism,
            sasl_plain_username=kafka_scram.username,
            sasl_plain_password="wrong-password",
            bootstrap_timeout_ms=3_000,
        ).close()


# --------------------------------------------------------------------------- STOMP


def _stomp_round_trip(
    url: str,
    destination: str,
    tag: str,
    login: str,
    passcode: str,
    queue_headers: dict[str, str] | None = None,
) -> None:
    import stomp

    class Collector(stomp.ConnectionListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
            self.errors: list[str] = []

        def on_message(self, frame) -> None:  # type: ignore[no-untyped-def]
            self.messages.put((frame.headers["natsbridge-id"], frame.body))

        def on_error(self, frame) -> None:  # type: ignore[no-untyped-def]
            self.errors.append(f"{frame.headers.get('message')}: {frame.body!r}")

    sent = make_messages(tag)
    # stomp.py sends the broker's hostname as the STOMP host header unless vhost is given, and
    # RabbitMQ takes that header as the virtual host: name the default vhost explicitly.
    conn = stomp.Connection12(
        [host_port(url, 61613)], vhost="/", auto_decode=False, heartbeats=(0, 0)
    )
    listener = Collector()
    conn.set_listener("collector", listener)
    conn.connect(login, passcode, wait=True)
    try:
        conn.subscribe(destination, id="smoke", ack="auto", headers=queue_headers)
        for msg_id, payload in sent.items():
            headers = {"natsbridge-id": msg_id, "persistent": "true", **(queue_headers or {})}
            conn.send(destination, payload, headers=headers)
        received: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + TIMEOUT
        while len(received) < N:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out after {len(received)} messages: {listener.errors}"
            with contextlib.suppress(queue.Empty):
                received.append(listener.messages.get(timeout=remaining))
        conn.unsubscribe("smoke")
        assert not listener.errors
        assert_same(sent, received)
    finally:
        conn.disconnect(receipt="bye")


@pytest.mark.stomp
def test_stomp_rabbitmq_round_trip(stomp_rabbitmq_url: str, unique_name: str) -> None:
    # RabbitMQ declares the queue behind /queue/NAME on first SUBSCRIBE or SEND, with the
    # properties in their headers (which must agree); auto-delete removes it on unsubscribe.
    _stomp_round_trip(
        stomp_rabbitmq_url,
        f"/queue/{unique_name}",
        unique_name,
        "guest",
        "guest",
        queue_headers={"auto-delete": "true"},
    )


@pytest.mark.stomp
def test_stomp_activemq_round_trip(
    stomp_activemq_url: str, activemq_credentials: tuple[str, str], unique_name: str
) -> None:
    login, passcode = activemq_credentials
    _stomp_round_trip(stomp_activemq_url, f"/queue/{unique_name}", unique_name, login, passcode)


# --------------------------------------------------------------------------- NATS


@pytest.mark.nats
def test_nats_core_round_trip(nats_url: str, unique_name: str) -> None:
    import nats

    async def run() -> list[tuple[str, bytes]]:
        nc = await nats.connect(nats_url)
        try:
            received: list[tuple[str, bytes]] = []
            done = asyncio.Event()

            async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
                received.append((msg.headers["Nats-Msg-Id"], msg.data))
                if len(received) == N:
                    done.set()

            sub = await nc.subscribe(f"{unique_name}.>", cb=on_msg)
            await nc.flush()
            for i, (msg_id, payload) in enumerate(sent.items()):
                await nc.publish(
                    f"{unique_name}.m.{i % 7}", payload, headers={"Nats-Msg-Id": msg_id}
                )
            await nc.flush()
            await asyncio.wait_for(done.wait(), TIMEOUT)
            await sub.unsubscribe()
            return received
        finally:
            await nc.close()

    sent = make_messages(unique_name)
    assert_same(sent, asyncio.run(run()))


@pytest.mark.nats
def test_nats_jetstream_round_trip(nats_url: str, unique_name: str) -> None:
    import nats
    from nats.js.api import StorageType, StreamConfig

    async def run() -> list[tuple[str, bytes]]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            await js.add_stream(
                StreamConfig(
                    name=unique_name, subjects=[f"{unique_name}.>"], storage=StorageType.FILE
                )
            )
            items = list(sent.items())
            for start in range(0, N, 100):  # acked publishes, 100 in flight at a time
                acks = await asyncio.gather(
                    *(
                        js.publish(f"{unique_name}.m", payload, headers={"Nats-Msg-Id": msg_id})
                        for msg_id, payload in items[start : start + 100]
                    )
                )
                assert all(not ack.duplicate for ack in acks)
            info = await js.stream_info(unique_name)
            assert info.state.messages == N
            psub = await js.pull_subscribe(f"{unique_name}.>", durable="smoke", stream=unique_name)
            received: list[tuple[str, bytes]] = []
            deadline = time.monotonic() + TIMEOUT
            while len(received) < N and time.monotonic() < deadline:
                for msg in await psub.fetch(batch=200, timeout=5):
                    received.append((msg.headers["Nats-Msg-Id"], msg.data))
                    await msg.ack()
            return received
        finally:
            with contextlib.suppress(Exception):
                await js.delete_stream(unique_name)
            await nc.close()

    sent = make_messages(unique_name)
    assert_same(sent, asyncio.run(run()))
