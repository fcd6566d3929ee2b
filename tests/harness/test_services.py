"""The `services` fixture: a broker restart keeps its data, a paused broker stops answering.

Connector fault tests rely on both; these prove the harness does what they assume.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from tests.conftest import Services

N = 20


@pytest.mark.nats
@pytest.mark.slow
def test_nats_restart_keeps_jetstream_data(
    nats_url: str, services: Services, unique_name: str
) -> None:
    import nats

    async def publish() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(name=unique_name, subjects=[f"{unique_name}.>"])
        for i in range(N):
            await js.publish(f"{unique_name}.m", f"{i}".encode())
        await nc.close()

    async def check_and_delete() -> list[bytes]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            psub = await js.pull_subscribe(f"{unique_name}.>", stream=unique_name)
            msgs = await psub.fetch(batch=N, timeout=10)
            return [m.data for m in msgs]
        finally:
            await js.delete_stream(unique_name)
            await nc.close()

    asyncio.run(publish())
    before = services.pid("nats")
    services.restart("nats")
    assert services.pid("nats") != before
    assert asyncio.run(check_and_delete()) == [f"{i}".encode() for i in range(N)]


@pytest.mark.nats
def test_paused_nats_stops_answering(nats_url: str, services: Services) -> None:
    parts = urlsplit(nats_url)
    addr = (parts.hostname or "127.0.0.1", parts.port or 4222)

    def ping() -> bool:
        with socket.create_connection(addr, timeout=2) as sock:
            sock.settimeout(2)
            try:
                f = sock.makefile("rb")
                f.readline()  # INFO
                sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
                return f.readline().startswith(b"PONG")
            except TimeoutError:
                return False

    assert ping()
    with services.paused("nats") as pid:
        assert pid == services.pid("nats")
        assert not ping()
    assert ping()


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka_restart_keeps_log(
    kafka_bootstrap: str, services: Services, unique_name: str
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(N):
        producer.send(unique_name, f"{i}".encode())
    producer.flush(30)
    producer.close()

    services.restart("kafka")

    consumer = KafkaConsumer(
        unique_name, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(values) < N and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            values += [r.value for r in records]
    consumer.close()
    assert values == [f"{i}".encode() for i in range(N)]


@pytest.mark.amqp
@pytest.mark.slow
def test_rabbitmq_restart_keeps_durable_queue(
    amqp_url: str, services: Services, unique_name: str
) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(unique_name, durable=True)
    for i in range(N):
        ch.basic_publish("", unique_name, f"{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()

    services.restart("rabbitmq")

    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        values = []
        for _ in range(N):
            _method, _props, body = ch.basic_get(unique_name, auto_ack=True)
            values.append(body)
        assert values == [f"{i}".encode() for i in range(N)]
    finally:
        with contextlib.suppress(Exception):
            ch.queue_delete(unique_name)
        conn.close()


@pytest.mark.stomp
@pytest.mark.slow
def test_activemq_restart_keeps_persistent_messages(
    stomp_activemq_url: str,
    activemq_credentials: tuple[str, str],
    services: Services,
    unique_name: str,
) -> None:
    import stomp

    parts = urlsplit(stomp_activemq_url)
    hosts = [(parts.hostname or "127.0.0.1", parts.port or 61613)]
    dest = f"/queue/{unique_name}"

    conn = stomp.Connection12(hosts, vhost="/", auto_decode=False)
    conn.connect(*activemq_credentials, wait=True)
    for i in range(N):
        conn.send(dest, f"{i}".encode(), headers={"persistent": "true"})
    conn.disconnect(receipt="sent")  # the receipt drains the sends first

    services.restart("activemq")

    got: list[bytes] = []

    class Collect(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame) -> None:  # type: ignore[no-untyped-def]
            got.append(frame.body)

    conn = stomp.Connection12(hosts, vhost="/", auto_decode=False)
    conn.set_listener("collect", Collect())
    conn.connect(*activemq_credentials, wait=True)
    conn.subscribe(dest, id="1", ack="auto")
    deadline = time.monotonic() + 30
    while len(got) < N and time.monotonic() < deadline:
        time.sleep(0.05)
    conn.disconnect(receipt="bye")
    assert got == [f"{i}".encode() for i in range(N)]
