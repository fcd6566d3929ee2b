"""The applications of the worked migration: a producer and a consumer of numbered messages.

Run as processes (``python -m tests.e2e.migration_actors ROLE SIDE ...``), as the
applications of a team would be: each appends one line per message to its `--log` file,
a producer after the broker confirmed the message, a consumer before it acknowledges it,
and stops cleanly on SIGTERM after the message in hand. Producers send ``--rate``
messages per second, numbered from ``--first``; the payload is the number.

Sides: ``amqp`` (publish to an exchange with a routing key / consume a queue), ``kafka``
(a topic / a consumer group), ``nats`` (JetStream publish to a subject / a durable pull
consumer that starts at ``--since``, a Unix time).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

STOP = False
BATCH = 50


def _stop(*_: object) -> None:
    global STOP
    STOP = True


def produce(send: Callable[[bytes], None], first: int, rate: float, log: IO[str]) -> None:
    """Send numbered messages at `rate` per second until SIGTERM."""
    number, started = first, time.monotonic()
    while not STOP:
        send(str(number).encode())
        log.write(f"{number}\n")
        log.flush()
        number += 1
        ahead = (number - first) / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)


def amqp_producer(args: argparse.Namespace, log: IO[str]) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.confirm_delivery()
    properties = pika.BasicProperties(delivery_mode=2)

    def send(body: bytes) -> None:
        channel.basic_publish(args.exchange, args.key, body, properties, mandatory=True)

    produce(send, args.first, args.rate, log)
    connection.close()


def amqp_consumer(args: argparse.Namespace, log: IO[str]) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=100)
    for method, _, body in channel.consume(args.queue, inactivity_timeout=0.2):
        if STOP:
            break
        if method is None:
            continue
        log.write(f"{body.decode()}\n")
        log.flush()
        channel.basic_ack(method.delivery_tag)
    channel.cancel()  # unacked prefetched messages go back to the queue
    connection.close()


def kafka_producer(args: argparse.Namespace, log: IO[str]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=args.url, acks="all")

    def send(body: bytes) -> None:
        producer.send(args.topic, value=body).get(timeout=30)

    produce(send, args.first, args.rate, log)
    producer.close()


def kafka_consumer(args: argparse.Namespace, log: IO[str]) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.url,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    while not STOP:
        batches = consumer.poll(timeout_ms=200)
        for records in batches.values():
            for record in records:
                log.write(f"{record.value.decode()}\n")
        log.flush()
        if batches:
            consumer.commit()
    consumer.close()


async def _nats_producer(args: argparse.Namespace, log: IO[str]) -> None:
    import nats

    nc = await nats.connect(args.url)
    js = nc.jetstream()
    number, started = args.first, time.monotonic()
    while not STOP:
        await js.publish(args.subject, str(number).encode())
        log.write(f"{number}\n")
        log.flush()
        number += 1
        ahead = (number - args.first) / args.rate - (time.monotonic() - started)
        await asyncio.sleep(max(ahead, 0))
    await nc.close()


async def _nats_consumer(args: argparse.Namespace, log: IO[str]) -> None:
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    nc = await nats.connect(args.url)
    js = nc.jetstream()
    start = datetime.fromtimestamp(args.since, UTC).isoformat().replace("+00:00", "Z")
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)
    subscription = await js.pull_subscribe(
        args.subject, durable=args.durable, stream=args.stream, config=config
    )
    while not STOP:
        try:
            messages = await subscription.fetch(BATCH, timeout=0.5)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        for message in messages:
            log.write(f"{message.data.decode()}\n")
        log.flush()
        for message in messages:
            await message.ack()
    await nc.close()


ACTORS: dict[tuple[str, str], Callable[[argparse.Namespace, IO[str]], None]] = {
    ("produce", "amqp"): amqp_producer,
    ("consume", "amqp"): amqp_consumer,
    ("produce", "kafka"): kafka_producer,
    ("consume", "kafka"): kafka_consumer,
    ("produce", "nats"): lambda args, log: asyncio.run(_nats_producer(args, log)),
    ("consume", "nats"): lambda args, log: asyncio.run(_nats_consumer(args, log)),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["produce", "consume"])
    parser.add_argument("side", choices=["amqp", "kafka", "nats"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--exchange")
    parser.add_argument("--key", default="orders")
    parser.add_argument("--queue")
    parser.add_argument("--topic")
    parser.add_argument("--group")
    parser.add_argument("--subject")
    parser.add_argument("--stream")
    parser.add_argument("--durable")
    parser.add_argument("--since", type=float, default=0.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    with open(args.log, "a") as log:
        ACTORS[(args.role, args.side)](args, log)


if __name__ == "__main__":
    main()
