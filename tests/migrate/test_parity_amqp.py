"""`parity`, the parity tap and `lag` of a RabbitMQ migration on the real brokers.

RabbitMQ forgets a message once a consumer acked it, so the legacy side is what the
parity tap recorded in its ledger. A message published before the tap opened has a copy
but no ledger entry: it is read as context, neither counted nor extra. A copy deleted
from the stream is missing with its ledger coordinates; a message injected into the
stream is extra; messages published while the mirror is stopped are pending and count
as the mirror queue's depth.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats
import pika
import pytest

from natsbridge.bridge.errors import PermanentError
from natsbridge.bridge.migrate.lag import lag
from natsbridge.bridge.migrate.ledger import ledger_path
from natsbridge.bridge.migrate.parity import close_tap, open_tap, parity
from tests.e2e.bridge_process import BridgeProcess
from tests.migrate.parity_helpers import (
    delete_and_inject,
    migration_of,
    mirror_config,
    wait_for_stream,
)

pytestmark = [pytest.mark.amqp, pytest.mark.nats]

MESSAGES = 20


def publish(amqp_url: str, exchange: str, start: int, count: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for i in range(start, start + count):
            channel.basic_publish(
                exchange,
                f"eu.{i}",
                b"order %d" % i,
                pika.BasicProperties(message_id=f"m{i}", headers={"trace": f"t{i}"}),
            )
    finally:
        connection.close()


def declare(amqp_url: str, exchange: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().exchange_declare(exchange, "topic", durable=False, auto_delete=False)
    finally:
        connection.close()


def tap_exists(amqp_url: str, queue: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


async def copy_with(nats_url: str, stream: str, payload: bytes) -> int:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        for seq in range(1, last + 1):
            if (await js.get_msg(stream, seq)).data == payload:
                return seq
        raise AssertionError(f"no copy of {payload!r}")
    finally:
        await nc.close()


def test_amqp_parity_through_the_tap_ledger(tmp_path: Path, amqp_url: str, nats_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    name, exchange, stream = f"par-{tag}", f"parity-{tag}", f"PARITY_{tag}"
    declare(amqp_url, exchange)
    path = mirror_config(
        tmp_path,
        name,
        {"connection": "rabbit", "exchange": exchange, "binding_keys": ["#"]},
        {
            "rabbit": {"kind": "amqp", "url": amqp_url},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        {"subject": f"parity.{tag}.{{{{routing_key}}}}", "stream": stream},
    )
    bridge = BridgeProcess(path, tmp_path / "data")
    bridge.start()  # binds the mirror's queue
    try:
        publish(amqp_url, exchange, 0, 1)  # before the tap: a copy without a ledger entry
        wait_for_stream(bridge, nats_url, stream, 1)
        config, migration = migration_of(path)
        with pytest.raises(PermanentError, match="no parity tap is recording"):
            asyncio.run(parity(config, migration, 600))
        asyncio.run(open_tap(config, migration))
        publish(amqp_url, exchange, 1, MESSAGES)
        wait_for_stream(bridge, nats_url, stream, 1 + MESSAGES)
        assert bridge.terminate() == 0, bridge.tail()
    finally:
        bridge.stop()

    report = asyncio.run(parity(config, migration, 600))
    assert report.ok, report.to_json()
    assert report.counts["legacy"] == {f"exchange {exchange}": MESSAGES}
    assert report.counts["nats"] == {f"exchange {exchange}": MESSAGES}  # not the pre-tap one
    assert asyncio.run(lag(config, migration)).legacy == 0

    dropped = asyncio.run(copy_with(nats_url, stream, b"order 3"))
    injected = asyncio.run(delete_and_inject(nats_url, stream, dropped, f"parity.{tag}.x"))
    report = asyncio.run(parity(config, migration, 600))
    assert report.missing == [
        {
            "tap": "ledger",
            "entry": 3,
            "exchange": exchange,
            "routing_key": "eu.3",
            "message_id": "m3",
        }
    ]
    assert report.extra == [
        {"stream": stream, "seq": injected, "subject": f"parity.{tag}.x", "routing_key": None}
    ]

    publish(amqp_url, exchange, 100, 3)  # the mirror is stopped: pending, and queue depth
    report = asyncio.run(parity(config, migration, 600))
    assert report.pending == 3 and len(report.missing) == 1
    measured = asyncio.run(lag(config, migration))
    assert measured.legacy == 3 and measured.legacy_what == f"queue natsbridge.{name}.to-nats"

    asyncio.run(close_tap(config, migration))
    assert not tap_exists(amqp_url, f"natsbridge.{name}.parity")
    assert not ledger_path(config.bridge.data_dir, name).exists()
