"""Stateful property test: a model of one stream + consumer against the real store.

Random sequences of publish (with and without message ids), fetch, ack, nak (with and
without delay), term, clock moves, commits, clean restarts and crashes (the connection
dropped with uncommitted work, as kill -9 would). After a crash the model goes back to
its last committed state, and after any reopen every pending message is due at once.
Checked on every step: PubAcks (including duplicates), exactly which messages a fetch
returns, in which order and with which delivery count, and the counters.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from natsbridge.bridge.broker.config import ConsumerConfig, PubAck, Retention, StreamConfig
from natsbridge.bridge.broker.store import Store

from .conftest import FakeClock, crash

ACK_WAIT = 10.0
MAX_DELIVER = 3
MAX_ACK_PENDING = 5
WINDOW = 60.0


@dataclass
class Model:
    """What the stream and its consumer should hold."""

    workqueue: bool
    max_msgs: int
    messages: dict[int, bytes] = field(default_factory=dict)
    last_seq: int = 0
    dedup: dict[str, tuple[int, int]] = field(default_factory=dict)
    pending: dict[int, tuple[int, float]] = field(default_factory=dict)  # seq -> (n, deadline)
    delivered: int = 0
    dead: list[bytes] = field(default_factory=list)

    def publish(self, payload: bytes, msg_id: str | None, now_ns: int) -> PubAck:
        if msg_id is not None and msg_id in self.dedup:
            seq, ts = self.dedup[msg_id]
            if ts >= now_ns - int(WINDOW * 1e9):
                return PubAck("s", seq, True)
        self.last_seq += 1
        self.messages[self.last_seq] = payload
        if msg_id is not None:
            self.dedup[msg_id] = (self.last_seq, now_ns)
        while self.max_msgs and len(self.messages) > self.max_msgs:
            oldest = min(self.messages)
            del self.messages[oldest]
            self.pending.pop(oldest, None)
        return PubAck("s", self.last_seq)

    def settle(self, seq: int) -> None:
        del self.pending[seq]
        if self.workqueue:
            del self.messages[seq]

    def dead_letter(self, seq: int) -> None:
        self.dead.append(self.messages[seq])
        self.settle(seq)

    def fetch(self, batch: int, now: float) -> list[tuple[int, bytes, int]]:
        taken: list[int] = []
        for _, seq in sorted((d, s) for s, (_, d) in self.pending.items() if d <= now):
            if len(taken) >= batch:
                break
            if self.pending[seq][0] >= MAX_DELIVER:
                self.dead_letter(seq)
                continue
            taken.append(seq)
        out = []
        for seq in taken:
            n = self.pending[seq][0] + 1
            self.pending[seq] = (n, now + ACK_WAIT)
            out.append((seq, self.messages[seq], n))
        room = min(batch - len(taken), MAX_ACK_PENDING - len(self.pending))
        if room > 0:
            new = sorted(s for s in self.messages if s > self.delivered)[:room]
            for seq in new:
                self.pending[seq] = (1, now + ACK_WAIT)
                out.append((seq, self.messages[seq], 1))
            self.delivered = self.last_seq if len(new) < room else new[-1]
        return out

    def nak(self, seq: int, delay: float | None, now: float) -> None:
        n, _ = self.pending[seq]
        if n >= MAX_DELIVER:
            self.dead_letter(seq)
        else:
            self.pending[seq] = (n, now + (delay or 0.0))

    def reopened(self, now: float) -> None:
        self.pending = {seq: (n, now) for seq, (n, _) in self.pending.items()}


class StoreMachine(RuleBasedStateMachine):
    """The real store and the model, step by step."""

    retention = Retention.WORKQUEUE
    max_msgs = 0

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="broker-model-"))
        self.clock = FakeClock()
        self.counter = 0

    @initialize()
    def setup(self) -> None:
        self.store = Store.open(self.dir, clock=self.clock)
        self.store.add_stream(
            StreamConfig(
                name="s",
                retention=self.retention,
                max_msgs=self.max_msgs,
                duplicate_window=WINDOW,
                dead_letter="s.dlq",
            )
        )
        self.store.add_consumer(
            "s",
            ConsumerConfig(
                name="c",
                ack_wait=ACK_WAIT,
                max_deliver=MAX_DELIVER,
                max_ack_pending=MAX_ACK_PENDING,
            ),
        )
        self.store.commit()
        self.model = Model(workqueue=self.retention is Retention.WORKQUEUE, max_msgs=self.max_msgs)
        self.committed = copy.deepcopy(self.model)

    def teardown(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            try:
                store.close()
            except Exception:
                crash(store)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _reopen(self) -> None:
        self.store = Store.open(self.dir, clock=self.clock)
        self.model.reopened(self.clock.monotonic())

    @rule(msg_id=st.one_of(st.none(), st.sampled_from(["a", "b", "c"])))
    def publish(self, msg_id: str | None) -> None:
        self.counter += 1
        payload = self.counter.to_bytes(4, "big")
        ack = self.store.publish("s", "subject", payload, msg_id=msg_id)
        assert ack == self.model.publish(payload, msg_id, self.clock.time_ns())

    @rule(batch=st.integers(1, 4))
    def fetch(self, batch: int) -> None:
        rows = self.store.fetch("s", "c", batch).messages
        got = [(row[0], row[5], row[6]) for row in rows]
        assert got == self.model.fetch(batch, self.clock.monotonic())

    @precondition(lambda self: self.model.pending)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.model.pending)))
        self.store.ack("s", "c", seq)
        self.model.settle(seq)

    @precondition(lambda self: self.model.pending)
    @rule(data=st.data(), delay=st.sampled_from([None, 0.0, 5.0]))
    def nak(self, data: st.DataObject, delay: float | None) -> None:
        seq = data.draw(st.sampled_from(sorted(self.model.pending)))
        self.store.nak("s", "c", seq, delay)
        self.model.nak(seq, delay, self.clock.monotonic())

    @precondition(lambda self: self.model.pending)
    @rule(data=st.data())
    def term(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.model.pending)))
        self.store.term("s", "c", seq, "refused")
        self.model.dead_letter(seq)

    @rule(seconds=st.sampled_from([1.0, 5.0, 10.0, 61.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def commit(self) -> None:
        self.store.maintain(idle=True)
        self.store.commit()
        self.committed = copy.deepcopy(self.model)

    @rule()
    def restart(self) -> None:
        self.store.close()
        self.committed = copy.deepcopy(self.model)
        self._reopen()

    @rule()
    def kill(self) -> None:
        crash(self.store)
        self.model = copy.deepcopy(self.committed)
        self._reopen()

    @invariant()
    def counters_agree(self) -> None:
        info = self.store.stream_info("s")
        assert (info.messages, info.last_seq) == (len(self.model.messages), self.model.last_seq)
        [consumer] = info.consumers
        assert consumer.num_ack_pending == len(self.model.pending)
        expected_floor = (min(self.model.pending) - 1) if self.model.pending else None
        if expected_floor is not None:
            assert consumer.ack_floor == expected_floor
        dead = self.store.messages("s.dlq", 1, 10_000)
        assert [m.payload for m in dead] == self.model.dead


class LimitsStoreMachine(StoreMachine):
    """The same with limits retention (acks recorded, messages kept) and max_msgs."""

    retention = Retention.LIMITS
    max_msgs = 8


SETTINGS = settings(
    max_examples=int(os.environ.get("BROKER_MODEL_EXAMPLES", "60")),
    stateful_step_count=40,
    deadline=None,
)
TestWorkQueue = StoreMachine.TestCase
TestWorkQueue.settings = SETTINGS
TestLimits = LimitsStoreMachine.TestCase
TestLimits.settings = SETTINGS
