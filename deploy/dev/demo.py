"""Drive examples/rabbitmq-nats.yaml end to end and print what arrived where.

Run through deploy/dev/demo.sh, which starts the brokers and sets the environment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import nats
import pika
from nats.js.errors import NotFoundError

AMQP_URL = os.environ["NATSBRIDGE_AMQP_URL"]
NATS_URL = os.environ["NATSBRIDGE_NATS_URL"]
WAIT_S = 60.0


def main(config: str, count: int) -> int:
    run_id = uuid.uuid4().hex[:8]
    bridge = subprocess.Popen(
        [sys.executable, "-m", "natsbridge", "run", "-c", config, "--log-format", "text"],
        stderr=subprocess.PIPE,
        text=True,
    )
    threading.Thread(target=_echo_warnings, args=(bridge,), daemon=True).start()
    rpc = threading.Thread(target=_pricing_server, daemon=True)
    rpc.start()
    try:
        ok = asyncio.run(_exercise(run_id, count, bridge))
    finally:
        bridge.send_signal(signal.SIGTERM)
        code = bridge.wait(timeout=60)
        print(f"bridge stopped with SIGTERM: exit {code}")
    return 0 if ok and code == 0 else 1


async def _exercise(run_id: str, count: int, bridge: subprocess.Popen[str]) -> bool:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    await _wait_for_stream(js, "SHIPMENTS", bridge)
    await _wait_for_stream(js, "ORDERS", bridge)

    # RabbitMQ -> JetStream (orders-to-nats)
    start_seq = (await js.stream_info("ORDERS")).state.last_seq
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    _wait_for_queue(connection, "natsbridge.orders-to-nats", bridge)
    channel = connection.channel()
    channel.exchange_declare("shipments", "topic", durable=True)
    observed = channel.queue_declare(f"demo.shipments.{run_id}", exclusive=True).method.queue
    channel.queue_bind(observed, "shipments", "#")
    began = time.monotonic()
    for i in range(count):
        channel.basic_publish(
            "orders",
            f"eu.created.{i % 10}",
            f"order {i} of {run_id}".encode(),
            pika.BasicProperties(headers={"run": run_id}, delivery_mode=2),
        )
    orders = await _count_stream(js, "ORDERS", start_seq, count)
    print(
        f"orders-to-nats:      {count} sent to RabbitMQ exchange 'orders' -> "
        f"{orders} in JetStream stream ORDERS ({time.monotonic() - began:.1f}s)"
    )

    # JetStream -> RabbitMQ (shipments-to-rabbit)
    began = time.monotonic()
    await asyncio.gather(
        *(
            js.publish(f"shipments.{('eu', 'us', 'apac')[i % 3]}", f"shipment {i}".encode())
            for i in range(count)
        )
    )
    shipments = _drain_queue(channel, observed, count)
    print(
        f"shipments-to-rabbit: {count} published to JetStream shipments.* -> "
        f"{shipments} on RabbitMQ exchange 'shipments' ({time.monotonic() - began:.1f}s)"
    )
    connection.close()

    # NATS request -> RabbitMQ RPC server -> reply (pricing-rpc)
    answered = 0
    for i in range(10):
        reply = await nc.request("pricing.quote", f"SKU-{i}".encode(), timeout=5)
        answered += reply.data == f"price of SKU-{i}: 42".encode()
    print(
        f"pricing-rpc:         10 NATS requests -> {answered} answers from the RabbitMQ RPC server"
    )
    await nc.close()
    return orders == count and shipments == count and answered == 10


async def _wait_for_stream(js: object, name: str, bridge: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if bridge.poll() is not None:
            raise SystemExit(f"the bridge exited with {bridge.returncode}")
        try:
            await js.stream_info(name)  # type: ignore[attr-defined]
            return
        except NotFoundError:
            await asyncio.sleep(0.2)
    raise SystemExit(f"stream {name} did not appear within {WAIT_S:.0f}s")


def _wait_for_queue(
    connection: pika.BlockingConnection, queue: str, bridge: subprocess.Popen[str]
) -> None:
    """Wait until the bridge has declared and bound its queue (so nothing is unroutable)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if bridge.poll() is not None:
            raise SystemExit(f"the bridge exited with {bridge.returncode}")
        channel = connection.channel()
        try:
            channel.queue_declare(queue, passive=True)
            channel.close()
            return
        except pika.exceptions.ChannelClosedByBroker:
            time.sleep(0.2)
    raise SystemExit(f"queue {queue} did not appear within {WAIT_S:.0f}s")


async def _count_stream(js: object, name: str, start_seq: int, count: int) -> int:
    deadline = time.monotonic() + WAIT_S
    arrived = 0
    while time.monotonic() < deadline:
        arrived = (await js.stream_info(name)).state.last_seq - start_seq  # type: ignore[attr-defined]
        if arrived >= count:
            break
        await asyncio.sleep(0.2)
    return arrived


def _drain_queue(
    channel: pika.adapters.blocking_connection.BlockingChannel, queue: str, count: int
) -> int:
    received = 0
    for method, _, _ in channel.consume(queue, inactivity_timeout=WAIT_S):
        if method is None:
            break
        channel.basic_ack(method.delivery_tag)
        received += 1
        if received == count:
            break
    channel.cancel()
    return received


def _pricing_server() -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare("pricing_rpc")

    def answer(ch, method, props, body):  # type: ignore[no-untyped-def]
        ch.basic_publish(
            "",
            props.reply_to,
            b"price of " + body + b": 42",
            pika.BasicProperties(correlation_id=props.correlation_id),
        )
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume("pricing_rpc", answer)
    channel.start_consuming()


def _echo_warnings(bridge: subprocess.Popen[str]) -> None:
    assert bridge.stderr is not None
    for line in bridge.stderr:
        if " INFO " not in line:
            sys.stderr.write(line)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], int(sys.argv[2])))
