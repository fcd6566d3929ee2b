"""Consuming from the embedded store (a layer of bridge.broker.store.Store): fetch, and
the ack state of each delivery (ack, nak, term, in_progress, redelivery timers)."""

from __future__ import annotations

import heapq

from natsbridge.bridge.broker.config import (
    Retention,
)
from natsbridge.bridge.broker.dead_letters import DeadLetterStore
from natsbridge.bridge.broker.schema import (
    ROW_SQL,
    chunks,
)
from natsbridge.bridge.broker.state import (
    ConsumerState,
    DeliveryRow,
    FetchResult,
    Pending,
)
from natsbridge.bridge.broker.storage import StoreCore
from natsbridge.bridge.errors import (
    NotFound,
)


class ConsumeStore(DeadLetterStore):
    """Consumers: fetch, and ack, nak, term or in_progress a delivery."""

    # ------------------------------------------------------------------ consume

    def fetch(self, stream: str, consumer: str, batch: int) -> FetchResult:
        """Deliver up to `batch` messages: due redeliveries first, then new ones in order."""
        self._check_writable()
        return self.fetch_from(self._consumer(stream, consumer), batch)

    def consumer_handle(self, stream: str, consumer: str) -> object:
        """An opaque handle for the fast ack path (`ack_handle` …); NotFound if absent."""
        return self._consumer(stream, consumer)

    def fetch_from(self, c: object, batch: int) -> FetchResult:
        """fetch() on a handle from consumer_handle()."""
        assert isinstance(c, ConsumerState)
        if c.deleted:
            raise NotFound(f"consumer {c.config.name!r} was deleted")
        self._check_writable()
        with self._guard():
            return self._fetch(c, max(batch, 1))

    def _fetch(self, c: ConsumerState, batch: int) -> FetchResult:
        cfg = c.config
        st = c.stream
        now = self._clock.monotonic()
        self._flush()  # evictions buffered so far apply before pending messages are chosen
        self._begin()
        due = self._take_due(c, now, batch)
        out: list[DeliveryRow] = []
        self._flush()
        self._begin()
        if due:
            self._redeliver(c, due, now, out)
        room = batch - len(out)
        limit = cfg.in_flight_limit
        if limit:
            room = min(room, limit - len(c.pending))  # redelivered ones are still pending
        if room > 0 and c.delivered < st.last_seq:
            out.extend(self._deliver_new(c, room, now))
        wake_at = c.timers[0][0] if c.timers else None
        return FetchResult(out, wake_at)

    def _take_due(self, c: ConsumerState, now: float, batch: int) -> list[tuple[int, Pending]]:
        """Up to `batch` pending messages whose ack wait is over (max_deliver: dead letters)."""
        cfg = c.config
        due: list[tuple[int, Pending]] = []
        timers = c.timers
        while timers and timers[0][0] <= now and len(due) < batch:
            deadline, seq = heapq.heappop(timers)
            p = c.pending.get(seq)
            if p is None or p.deadline != deadline:
                continue
            if cfg.max_deliver and p.deliveries >= cfg.max_deliver:
                self._dead_letter_pending(c, seq, "max_deliver")
                continue
            p.deadline = -1.0  # taken: a stale heap entry with the same deadline is now void
            due.append((seq, p))
        return due

    def _redeliver(
        self, c: ConsumerState, due: list[tuple[int, Pending]], now: float, out: list[DeliveryRow]
    ) -> None:
        """Hand out `due` again (into `out`), counting the delivery."""
        cfg = c.config
        rows = self._read_seqs(c.stream.id, [seq for seq, _ in due])
        for seq, p in due:
            row = rows.get(seq)
            if row is None:  # removed by limits meanwhile
                c.pending.pop(seq, None)
                self._forget_deliveries(c, seq, p)
                self._mark_consumer(c)
                continue
            p.deliveries += 1
            p.deadline = now + cfg.wait_after(p.deliveries)
            c.schedule(seq, p)
            self._w.redeliv_put[(c.id, seq)] = p.deliveries
            c.redelivered += 1
            self._mark_consumer(c)
            out.append((*row, p.deliveries))

    def _deliver_new(self, c: ConsumerState, room: int, now: float) -> list[DeliveryRow]:
        """Up to `room` messages past the consumer's cursor, now pending."""
        cfg = c.config
        st = c.stream
        # The constant 1 is the delivery count: rows come back as DeliveryRow as they are.
        if cfg.filter_subject is None:
            cur = self._conn.execute(
                f"SELECT {ROW_SQL}, 1 FROM messages WHERE stream=? AND seq>? ORDER BY seq LIMIT ?",
                (st.id, c.delivered, room),
            )
        else:
            cur = self._conn.execute(
                f"SELECT {ROW_SQL}, 1 FROM messages WHERE stream=? AND seq>? "
                "AND subject_matches(?, subject) ORDER BY seq LIMIT ?",
                (st.id, c.delivered, cfg.filter_subject, room),
            )
        rows_new: list[DeliveryRow] = cur.fetchall()
        deadline = now + cfg.wait_after(1)
        pending = c.pending
        timers = c.timers
        push = heapq.heappush
        for new in rows_new:
            seq = new[0]
            headers = new[4]
            pending[seq] = Pending(
                1,
                deadline,
                len(new[5]) + len(new[2]) + (len(headers) if headers is not None else 0),
            )
            push(timers, (deadline, seq))
        c.compact()
        if len(rows_new) < room:
            c.delivered = st.last_seq  # nothing (matching) left: skip past the rest
        else:
            c.delivered = rows_new[-1][0]
        self._mark_consumer(c)
        return rows_new

    def _read_seqs(
        self, sid: int, seqs: list[int]
    ) -> dict[int, tuple[int, int, str, str | None, str | None, bytes]]:
        found: dict[int, tuple[int, int, str, str | None, str | None, bytes]] = {}
        for start, n in chunks(len(seqs)):
            sql = self._sql.get(("read", n))
            if sql is None:
                sql = self._sql[("read", n)] = (
                    f"SELECT {ROW_SQL} FROM messages WHERE stream=? AND seq IN ("
                    + ",".join("?" * n)
                    + ")"
                )
            for row in self._conn.execute(sql, [sid, *seqs[start : start + n]]):
                found[row[0]] = row
        return found

    def ack(self, stream: str, consumer: str, seq: int) -> None:
        """Acknowledge a delivered message: it is never delivered again once committed."""
        self.ack_handle(self._consumer(stream, consumer), seq)

    def ack_handle(self, c: object, seq: int) -> None:
        """ack() on a handle from consumer_handle(); unknown or settled seqs are ignored."""
        assert isinstance(c, ConsumerState)
        if self._streams.get(c.stream.config.name) is not c.stream:
            c = self._adopt(c)
        p = c.pending.get(seq)
        if p is None or c.deleted:
            return
        if self._failed is not None:
            self._check_writable()
        del c.pending[seq]
        st = c.stream
        if st.config.retention is Retention.WORKQUEUE and p.deliveries == 1:
            # The hot path: a work-queue ack deletes the row; inlined _settle.
            seqs = self._w.deletes.get(st.id)
            if seqs is None:
                seqs = self._w.deletes[st.id] = []
            seqs.append(seq)
            st.msgs -= 1
            st.bytes -= p.size
            if not st.dirty:
                st.dirty = True
                self._dirty_streams[st.id] = st
            if not c.dirty:
                c.dirty = True
                self._dirty_consumers[c.id] = c
        else:
            self._settle(c, seq, p)

    def _adopt(self, c: ConsumerState) -> ConsumerState:
        """The consumer a handle names in this store: a handle outlives an in-process reopen
        (bridge.broker.broker), and then names the same consumer of the reopened store."""
        st = self._streams.get(c.stream.config.name)
        if st is c.stream or c.deleted or st is None:
            return c  # a deleted consumer's handle is a no-op, as before
        return st.consumers.get(c.config.name, c)

    def keep_deliveries(self, old: StoreCore) -> None:
        """After reopening in process: messages `old` handed out keep their ack deadline.

        Opening makes every unacked delivery due at once, right for a restart (nobody
        holds them any more) but not here: their receivers still do and would get a
        second copy while the first is in flight.
        """
        now = self._clock.monotonic()
        for name, st in self._streams.items():
            before = old._streams.get(name)
            for c in st.consumers.values():
                was = None if before is None else before.consumers.get(c.config.name)
                if was is None:
                    continue
                for seq, p in c.pending.items():
                    q = was.pending.get(seq)
                    if q is not None and q.deadline > now:
                        p.deadline = q.deadline
                c.timers = [(p.deadline, seq) for seq, p in c.pending.items()]
                heapq.heapify(c.timers)

    def nak(self, stream: str, consumer: str, seq: int, delay: float | None = None) -> None:
        """Ask for redelivery after `delay` seconds (default: at once)."""
        self.nak_handle(self._consumer(stream, consumer), seq, delay)

    def nak_handle(self, c: object, seq: int, delay: float | None = None) -> None:
        """nak() on a handle from consumer_handle()."""
        assert isinstance(c, ConsumerState)
        c = self._adopt(c)
        p = c.pending.get(seq)
        if p is None or c.deleted:
            return
        self._check_writable()
        if c.config.max_deliver and p.deliveries >= c.config.max_deliver:
            with self._guard():
                self._dead_letter_pending(c, seq, "max_deliver")
            return
        p.deadline = self._clock.monotonic() + max(delay or 0.0, 0.0)
        c.schedule(seq, p)

    def in_progress(self, stream: str, consumer: str, seq: int) -> None:
        """Restart the ack wait of a delivered message that is still being worked on."""
        self.in_progress_handle(self._consumer(stream, consumer), seq)

    def in_progress_handle(self, c: object, seq: int) -> None:
        """in_progress() on a handle from consumer_handle()."""
        assert isinstance(c, ConsumerState)
        c = self._adopt(c)
        p = c.pending.get(seq)
        if p is None or c.deleted:
            return
        p.deadline = self._clock.monotonic() + c.config.wait_after(p.deliveries)
        c.schedule(seq, p)

    def term(self, stream: str, consumer: str, seq: int, reason: str = "terminated") -> None:
        """Give up on a delivered message: it goes to the dead-letter stream with `reason`."""
        self.term_handle(self._consumer(stream, consumer), seq, reason)

    def term_handle(self, c: object, seq: int, reason: str = "terminated") -> None:
        """term() on a handle from consumer_handle()."""
        assert isinstance(c, ConsumerState)
        c = self._adopt(c)
        if seq not in c.pending or c.deleted:
            return
        self._check_writable()
        with self._guard():
            self._dead_letter_pending(c, seq, reason)
