"""The embedded broker: JetStream-style durable streams and pull consumers on SQLite.

The bridge's default buffer. `Broker` is the asyncio API the runtime uses; `Store` is
its synchronous core (its layers in bridge.broker.store, the file and its schema in
bridge.broker.schema); bridge.broker.commands holds the operator commands.

    broker = await Broker.open(data_dir)
    await broker.add_stream(StreamConfig("orders", retention=Retention.WORKQUEUE,
                                         dead_letter="orders.dead-letters"))
    await broker.add_consumer("orders", ConsumerConfig("deliver", max_deliver=5))
    ack = await broker.publish("orders", "orders.created", b"...")   # durable on return
    for msg in await broker.fetch("orders", "deliver", batch=100, timeout=1.0):
        msg.ack()                                 # or nak(delay), term(reason), in_progress()

Guarantees (with the default ``synchronous=FULL``):

* A publish returns (its future resolves) only after the transaction holding the
  message is committed and fsynced; concurrent publishers share one commit.
* A fetch hands out a message only after its delivery (cursor, delivery count) is
  committed, so ``max_deliver`` counts deliveries across crashes too.
* After a crash (kill -9, power loss) the store reopens consistent: every message not
  acked is delivered again, every committed ack or term stays done. Acks are queued,
  not awaited: an ack lost in a crash means one more delivery, never a lost message.
* A message id seen within the duplicate window (default 2 min, kept on disk) is not
  stored twice: the publish returns the first sequence with ``duplicate=True``.
* A damaged file raises StoreCorrupted on open or on first read, and is never emptied
  or recreated; a second process on the same data dir is refused.

Files: ``<data_dir>/buffer.db`` (SQLite, WAL mode) and ``buffer.lock``. Operator view:
``natsbridge streams --data-dir DIR [--json] [--check]`` and
``natsbridge dlq ls|show|replay``. Benchmark: ``python -m bench broker``.
"""

from natsbridge.bridge.broker.broker import Broker, Msg
from natsbridge.bridge.broker.config import (
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
from natsbridge.bridge.broker.store import Store
from natsbridge.bridge.broker.writer import BrokerOptions

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
    "Store",
    "StoredMessage",
    "StreamConfig",
    "StreamInfo",
    "Synchronous",
]
