"""The embedded broker: JetStream-style durable streams and pull consumers on SQLite.

The bridge's default buffer. `Broker` is the asyncio API the runtime uses; `Store` is
its synchronous core (one SQLite file per data dir, schema explained in
bridge.broker.store); `Router` fans messages out inside the process, core-NATS style;
bridge.broker.commands holds the operator commands (`natsbridge streams`, `dlq`).

    broker = await Broker.open(data_dir)
    await broker.add_stream(StreamConfig("orders", retention=Retention.WORKQUEUE,
                                         dead_letter="orders.dead-letters"))
    await broker.add_consumer("orders", ConsumerConfig("deliver"))
    ack = await broker.publish("orders", "orders.created", b"...")   # durable on return
    for msg in await broker.fetch("orders", "deliver", batch=100, timeout=1.0):
        msg.ack()                                                   # or nak(), term(reason)
"""

from bridge.broker.broker import Broker, BrokerOptions, Msg
from bridge.broker.config import (
    ConsumerConfig,
    ConsumerInfo,
    Discard,
    Outgoing,
    PubAck,
    Retention,
    StoredMessage,
    StreamConfig,
    StreamInfo,
    Synchronous,
)
from bridge.broker.router import Router, Subscription
from bridge.broker.store import Store

__all__ = [
    "Broker",
    "BrokerOptions",
    "ConsumerConfig",
    "ConsumerInfo",
    "Discard",
    "Msg",
    "Outgoing",
    "PubAck",
    "Retention",
    "Router",
    "Store",
    "StoredMessage",
    "StreamConfig",
    "StreamInfo",
    "Subscription",
    "Synchronous",
]
