"""Streams and consumers of the embedded store (a layer of bridge.broker.store.Store):
create, update and delete them, read their messages, and report their counters."""

from __future__ import annotations

from natsbridge.bridge.broker.config import (
    ConsumerConfig,
    ConsumerInfo,
    Retention,
    StoredMessage,
    StreamConfig,
    StreamInfo,
)
from natsbridge.bridge.broker.schema import (
    ROW_SQL,
    SIZE_SQL,
    decode_headers,
)
from natsbridge.bridge.broker.state import (
    ConsumerState,
    StreamState,
)
from natsbridge.bridge.broker.storage import StoreCore
from natsbridge.bridge.errors import (
    StoreError,
)


class StreamsStore(StoreCore):
    """Streams and consumers: create, update, delete, read and report."""

    def stream_names(self) -> list[str]:
        """Names of every stream, sorted."""
        return sorted(self._streams)

    def stream_configs(self) -> list[StreamConfig]:
        """Configs of every stream, sorted by name."""
        return [self._streams[n].config for n in sorted(self._streams)]

    def add_stream(self, config: StreamConfig) -> StreamInfo:
        """Create the stream, or update its config (retention cannot change).

        When `config.dead_letter` names a stream that does not exist, it is created
        with default limits (limits retention, no subjects).
        """
        self._check_writable()
        with self._guard():
            st = self._streams.get(config.name)
            if st is not None:
                if st.config.retention is not config.retention:
                    raise StoreError(
                        f"stream {config.name!r}: retention cannot change "
                        f"({st.config.retention.value} -> {config.retention.value})"
                    )
                if config.retention is Retention.WORKQUEUE and len(st.consumers) > 1:
                    raise StoreError(f"work-queue stream {config.name!r} has several consumers")
                if st.config != config:
                    self._flush()
                    self._begin()
                    self._conn.execute(
                        "UPDATE streams SET config=? WHERE id=?", (config.to_json(), st.id)
                    )
                    st.config = config
                    if self._over(st):
                        self._over_limits[st.id] = st
            else:
                self._flush()
                self._begin()
                created = self._clock.time_ns()
                cur = self._conn.execute(
                    "INSERT INTO streams (name, config, last_seq, msgs, bytes, created) "
                    "VALUES (?,?,0,0,0,?)",
                    (config.name, config.to_json(), created),
                )
                assert cur.lastrowid is not None
                st = StreamState(cur.lastrowid, config, 0, 0, 0)
                st.created = created
                self._streams[config.name] = st
            if config.dead_letter is not None and config.dead_letter not in self._streams:
                self.add_stream(StreamConfig(name=config.dead_letter))
            return self.stream_info(config.name)

    def delete_stream(self, name: str) -> None:
        """Delete a stream, its messages and its consumers."""
        self._check_writable()
        with self._guard():
            st = self._stream(name)
            self._flush()
            self._begin()
            for sql in (
                "DELETE FROM acks WHERE consumer IN (SELECT id FROM consumers WHERE stream=?)",
                "DELETE FROM redeliveries WHERE consumer IN "
                "(SELECT id FROM consumers WHERE stream=?)",
                "DELETE FROM consumers WHERE stream=?",
                "DELETE FROM dedup WHERE stream=?",
                "DELETE FROM messages WHERE stream=?",
                "DELETE FROM streams WHERE id=?",
            ):
                self._conn.execute(sql, (st.id,))
            st.deleted = True
            for c in st.consumers.values():
                c.deleted = True
            del self._streams[name]
            self._dedup_known.clear()  # stream ids can be reused

    def add_consumer(self, stream: str, config: ConsumerConfig) -> ConsumerInfo:
        """Create the durable consumer, or update its config."""
        self._check_writable()
        with self._guard():
            st = self._stream(stream)
            c = st.consumers.get(config.name)
            if c is None:
                if st.config.retention is Retention.WORKQUEUE and st.consumers:
                    raise StoreError(
                        f"work-queue stream {stream!r} already has consumer "
                        f"{next(iter(st.consumers))!r}: a work queue has one consumer"
                    )
                self._flush()
                self._begin()
                created = self._clock.time_ns()
                cur = self._conn.execute(
                    "INSERT INTO consumers (stream, name, config, delivered, ack_floor, "
                    "redelivered, dead_lettered, created) VALUES (?,?,?,0,0,0,0,?)",
                    (st.id, config.name, config.to_json(), created),
                )
                assert cur.lastrowid is not None
                c = ConsumerState(cur.lastrowid, st, config)
                c.created = created
                st.consumers[config.name] = c
            elif c.config != config:
                self._flush()
                self._begin()
                self._conn.execute(
                    "UPDATE consumers SET config=? WHERE id=?", (config.to_json(), c.id)
                )
                c.config = config
            return self.consumer_info(stream, config.name)

    def delete_consumer(self, stream: str, name: str) -> None:
        """Delete a consumer and its state (its messages stay in the stream)."""
        self._check_writable()
        with self._guard():
            c = self._consumer(stream, name)
            self._flush()
            self._begin()
            for sql in (
                "DELETE FROM acks WHERE consumer=?",
                "DELETE FROM redeliveries WHERE consumer=?",
                "DELETE FROM consumers WHERE id=?",
            ):
                self._conn.execute(sql, (c.id,))
            c.deleted = True
            del c.stream.consumers[name]

    # ------------------------------------------------------------------ reading and admin

    def get_message(self, stream: str, seq: int) -> StoredMessage | None:
        """The stored message `seq` of `stream`, or None."""
        msgs = self.messages(stream, seq, 1)
        return msgs[0] if msgs and msgs[0].seq == seq else None

    def messages(self, stream: str, start_seq: int = 1, limit: int = 100) -> list[StoredMessage]:
        """Up to `limit` stored messages of `stream` from `start_seq` on, in order."""
        st = self._stream(stream)
        with self._guard():
            self._flush()
            self._begin()
            rows = self._conn.execute(
                f"SELECT {ROW_SQL} FROM messages WHERE stream=? AND seq>=? ORDER BY seq LIMIT ?",
                (st.id, start_seq, limit),
            ).fetchall()
        return [
            StoredMessage(stream, seq, subject, payload, decode_headers(hdr), msg_id, ts / 1e9)
            for seq, ts, subject, msg_id, hdr, payload in rows
        ]

    def delete_message(self, stream: str, seq: int) -> bool:
        """Remove one message (from every consumer too); False when it was not stored."""
        self._check_writable()
        st = self._stream(stream)
        with self._guard():
            self._flush()
            self._begin()
            row = self._conn.execute(
                f"DELETE FROM messages WHERE stream=? AND seq=? RETURNING {SIZE_SQL}", (st.id, seq)
            ).fetchone()
            if row is None:
                return False
            st.msgs -= 1
            st.bytes -= row[0]
            self._mark(st)
            for c in st.consumers.values():
                p = c.pending.pop(seq, None)
                if p is not None:
                    self._forget_deliveries(c, seq, p)
                    self._mark_consumer(c)
            return True

    # ------------------------------------------------------------------ info

    def _oldest(self, sid: int, after: int, pattern: str | None) -> tuple[int, int] | None:
        if pattern is None:
            row = self._conn.execute(
                "SELECT seq, ts FROM messages WHERE stream=? AND seq>? ORDER BY seq LIMIT 1",
                (sid, after),
            ).fetchone()
        else:
            row = self._conn.execute(
                "SELECT seq, ts FROM messages WHERE stream=? AND seq>? "
                "AND subject_matches(?, subject) ORDER BY seq LIMIT 1",
                (sid, after, pattern),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def stream_info(self, name: str) -> StreamInfo:
        """Counters, sequences and consumers of one stream."""
        st = self._stream(name)
        with self._guard():
            self._flush()
            self._begin()
            now_ns = self._clock.time_ns()
            first = self._oldest(st.id, 0, None)
            return StreamInfo(
                config=st.config,
                messages=st.msgs,
                bytes=st.bytes,
                first_seq=first[0] if first else st.last_seq + 1,
                last_seq=st.last_seq,
                oldest_age=max(now_ns - first[1], 0) / 1e9 if first else None,
                created=st.created / 1e9,
                consumers=tuple(self._consumer_info(c, now_ns) for c in st.consumers.values()),
            )

    def streams(self) -> list[StreamInfo]:
        """stream_info of every stream, sorted by name."""
        return [self.stream_info(name) for name in self.stream_names()]

    def consumer_info(self, stream: str, name: str) -> ConsumerInfo:
        """Position and counters of one consumer."""
        c = self._consumer(stream, name)
        with self._guard():
            self._flush()
            self._begin()
            return self._consumer_info(c, self._clock.time_ns())

    def _consumer_info(self, c: ConsumerState, now_ns: int) -> ConsumerInfo:
        st = c.stream
        pattern = c.config.filter_subject
        if st.config.retention is Retention.WORKQUEUE and pattern is None:
            num_pending = st.msgs - len(c.pending)
        elif pattern is None:
            num_pending = self._conn.execute(
                "SELECT count(*) FROM messages WHERE stream=? AND seq>?", (st.id, c.delivered)
            ).fetchone()[0]
        else:
            num_pending = self._conn.execute(
                "SELECT count(*) FROM messages WHERE stream=? AND seq>? "
                "AND subject_matches(?, subject)",
                (st.id, c.delivered, pattern),
            ).fetchone()[0]
        oldest_ts: int | None = None
        if c.pending:
            row = self._conn.execute(
                "SELECT ts FROM messages WHERE stream=? AND seq=?", (st.id, min(c.pending))
            ).fetchone()
            oldest_ts = None if row is None else row[0]
        if oldest_ts is None:
            first = self._oldest(st.id, c.delivered, pattern)
            oldest_ts = None if first is None else first[1]
        return ConsumerInfo(
            stream=st.config.name,
            name=c.config.name,
            config=c.config,
            delivered=c.delivered,
            ack_floor=(min(c.pending) - 1) if c.pending else c.delivered,
            num_pending=num_pending,
            num_ack_pending=len(c.pending),
            num_redelivered=c.redelivered,
            num_dead_lettered=c.dead_lettered,
            oldest_age=None if oldest_ts is None else max(now_ns - oldest_ts, 0) / 1e9,
            created=c.created / 1e9,
        )
