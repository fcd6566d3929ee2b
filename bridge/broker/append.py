"""Appending to the embedded store (a layer of bridge.broker.store.Store): the publish
paths, their checks (size, subjects, room) and the duplicate window."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from natsbridge.bridge.broker.config import (
    Discard,
    Outgoing,
    PubAck,
)
from natsbridge.bridge.broker.schema import (
    chunks,
    encode_headers,
    stored_size,
)
from natsbridge.bridge.broker.state import (
    StreamState,
)
from natsbridge.bridge.broker.streams import StreamsStore
from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import (
    BridgeError,
    NotFound,
    PayloadTooLarge,
    StreamFull,
    SubjectError,
)


class AppendStore(StreamsStore):
    """Appends: publish, publish_each, publish_many and the duplicate window."""

    # ------------------------------------------------------------------ publish

    def _dedup_hit(self, st: StreamState, msg_id: str | None, now_ns: int) -> int | None:
        """The sequence `msg_id` was stored at within the duplicate window, or None."""
        if msg_id is None or not st.config.duplicate_window:
            return None
        key = (st.id, msg_id)
        try:
            hit = self._dedup_known[key]
        except KeyError:
            self._dedup_lookup(st, [msg_id])
            hit = self._dedup_known[key]
        if hit is None or hit[1] < now_ns - int(st.config.duplicate_window * 1e9):
            return None
        return hit[0]

    def _dedup_lookup(self, st: StreamState, msg_ids: Iterable[str | None]) -> None:
        """Load what the dedup table knows of `msg_ids` into the cache, in one query."""
        if not st.config.duplicate_window:
            return
        known = self._dedup_known
        wanted = list({m for m in msg_ids if m is not None and (st.id, m) not in known})
        if not wanted:
            return
        with self._guard():
            self._begin()
            for start, n in chunks(len(wanted)):
                chunk = wanted[start : start + n]
                for msg_id in chunk:
                    known[(st.id, msg_id)] = None
                sql = self._sql.get(("dedup", n))
                if sql is None:
                    sql = self._sql[("dedup", n)] = (
                        "SELECT msg_id, seq, ts FROM dedup WHERE stream=? AND msg_id IN ("
                        + ",".join("?" * n)
                        + ")"
                    )
                for msg_id, seq, ts in self._conn.execute(sql, [st.id, *chunk]):
                    known[(st.id, msg_id)] = (seq, ts)

    def _check_message(self, st: StreamState, subject: str, payload: bytes) -> None:
        limit = st.config.max_msg_size
        if limit and len(payload) > limit:
            raise PayloadTooLarge(len(payload), limit)
        if not st.accepts(subject):
            raise SubjectError(
                f"subject {subject!r} matches none of stream {st.config.name!r}'s subjects "
                f"{list(st.config.subjects)}"
            )

    def _check_room(self, st: StreamState, count: int, size: int) -> None:
        cfg = st.config
        if cfg.discard is Discard.OLD:
            return
        if cfg.discard is Discard.HOLD:
            count = size = 1  # full once at a limit, whatever the batch
        if (cfg.max_msgs and st.msgs + count > cfg.max_msgs) or (
            cfg.max_bytes and st.bytes + size > cfg.max_bytes
        ):
            raise StreamFull(
                f"stream {cfg.name!r} is full ({st.msgs} messages, {st.bytes} bytes; "
                f"max_msgs {cfg.max_msgs or 'unlimited'}, max_bytes "
                f"{cfg.max_bytes or 'unlimited'}) and its discard policy is {cfg.discard.value!r}"
            )

    def _append(
        self,
        st: StreamState,
        subject: str,
        payload: bytes,
        headers: str | None,
        msg_id: str | None,
        now_ns: int,
        size: int = -1,
    ) -> int:
        """Append one checked message; returns its sequence."""
        if size < 0:
            size = stored_size(subject, headers, payload)
        seq = st.last_seq + 1
        st.last_seq = seq
        st.msgs += 1
        st.bytes += size
        self._w.inserts.extend((st.id, seq, now_ns, subject, msg_id, headers, payload))
        cfg = st.config
        if msg_id is not None and cfg.duplicate_window:
            self._dedup_known[(st.id, msg_id)] = (seq, now_ns)
            self._w.dedup_put.append((st.id, msg_id, seq, now_ns))
        if not st.dirty:
            st.dirty = True
            self._dirty_streams[st.id] = st
        self.appended.add(cfg.name)
        if (cfg.max_msgs and st.msgs > cfg.max_msgs) or (
            cfg.max_bytes and st.bytes > cfg.max_bytes
        ):
            self._over_limits[st.id] = st  # _enforce_limits keeps a HOLD stream as it is
        return seq

    def publish(
        self,
        stream: str,
        subject: str,
        payload: bytes,
        headers: Headers | None = None,
        msg_id: str | None = None,
    ) -> PubAck:
        """Append a message to `stream` (durable at the next commit).

        A message id seen within the duplicate window returns the earlier sequence with
        `duplicate=True` and stores nothing. Raises NotFound, PayloadTooLarge,
        SubjectError (the stream has subjects and none matches) or StreamFull.
        """
        # The hot path of the broker: checks inlined, in the order of their likelihood.
        if self._failed is not None or self.read_only:
            self._check_writable()
        st = self._streams.get(stream)
        if st is None:
            raise NotFound(f"no stream {stream!r}")
        cfg = st.config
        now_ns = self._clock.time_ns()
        if msg_id is not None:
            dup = self._dedup_hit(st, msg_id, now_ns)
            if dup is not None:
                return PubAck(stream, dup, True)
        if (cfg.max_msg_size and len(payload) > cfg.max_msg_size) or cfg.subjects:
            self._check_message(st, subject, payload)
        hdr = encode_headers(headers) if headers else None
        size = len(payload) + len(subject) + (len(hdr) if hdr is not None else 0)
        if cfg.discard is not Discard.OLD:
            self._check_room(st, 1, size)
        return PubAck(stream, self._append(st, subject, payload, hdr, msg_id, now_ns, size))

    def publish_each(
        self, items: Sequence[tuple[str, str, bytes, Headers | None, str | None]]
    ) -> list[PubAck | BridgeError]:
        """publish() for each (stream, subject, payload, headers, msg_id), independently:
        each item gets its PubAck or its error, in order.

        The broker's path for many concurrent single publishes. The common case (no
        headers, no message id, a stream without subjects or size limits) is inlined.
        """
        if self._failed is not None or self.read_only:
            self._check_writable()
        out: list[PubAck | BridgeError] = []
        self._dedup_prefetch(items)
        now_ns = self._clock.time_ns()
        inserts = self._w.inserts
        dedup_put = self._w.dedup_put
        known = self._dedup_known
        window = 0
        name: str | None = None
        fast: StreamState | None = None  # the current stream, when it needs no checks
        limit = 0
        marked = False
        for stream, subject, payload, headers, msg_id in items:
            if stream != name:
                name, marked = stream, False
                st = self._streams.get(stream)
                cfg = None if st is None else st.config
                fast = st if cfg and not (cfg.subjects or cfg.max_msgs or cfg.max_bytes) else None
                limit = cfg.max_msg_size if cfg else 0
                window = int(cfg.duplicate_window * 1e9) if cfg else 0
            if fast is not None and not headers and (not limit or len(payload) <= limit):
                if msg_id is not None and window:
                    hit = known.get((fast.id, msg_id))  # looked up above: absent means new
                    if hit is not None and hit[1] >= now_ns - window:
                        out.append(PubAck(stream, hit[0], True))
                        continue
                if not marked:
                    marked = True
                    self.appended.add(stream)
                    if not fast.dirty:
                        fast.dirty = True
                        self._dirty_streams[fast.id] = fast
                seq = fast.last_seq + 1
                fast.last_seq = seq
                fast.msgs += 1
                fast.bytes += len(payload) + len(subject)
                inserts.extend((fast.id, seq, now_ns, subject, msg_id, None, payload))
                if msg_id is not None and window:
                    known[(fast.id, msg_id)] = (seq, now_ns)
                    dedup_put.append((fast.id, msg_id, seq, now_ns))
                out.append(PubAck(stream, seq))
                continue
            try:
                out.append(self.publish(stream, subject, payload, headers, msg_id))
            except BridgeError as exc:
                out.append(exc)
            marked = False  # publish() may have flushed and cleared the dirty marks
        return out

    def _dedup_prefetch(
        self, items: Sequence[tuple[str, str, bytes, Headers | None, str | None]]
    ) -> None:
        """Look up the message ids of `items`: one dedup query per stream, not per message."""
        ids: dict[str, list[str]] = {}
        for item in items:
            if item[4] is not None:
                ids.setdefault(item[0], []).append(item[4])
        for stream, msg_ids in ids.items():
            if stream in self._streams:
                self._dedup_lookup(self._streams[stream], msg_ids)

    def publish_many(self, stream: str, messages: Sequence[Outgoing]) -> list[PubAck]:
        """Append `messages` in order, all or none (one error fails the whole batch)."""
        self._check_writable()
        st = self._stream(stream)
        now_ns = self._clock.time_ns()
        self._dedup_lookup(st, (m.msg_id for m in messages))
        plan: list[tuple[Outgoing, str | None] | int] = []  # (message, headers) or dup seq
        seen: dict[str, int] = {}
        count = size = 0
        for m in messages:
            dup = self._dedup_hit(st, m.msg_id, now_ns)
            if dup is None and m.msg_id is not None and m.msg_id in seen:
                dup = -seen[m.msg_id] - 1  # the position of its first occurrence, encoded
            if dup is not None:
                plan.append(dup)
                continue
            self._check_message(st, m.subject, m.payload)
            hdr = encode_headers(m.headers)
            if m.msg_id is not None and st.config.duplicate_window:
                seen[m.msg_id] = len(plan)
            plan.append((m, hdr))
            count += 1
            size += stored_size(m.subject, hdr, m.payload)
        self._check_room(st, count, size)
        acks: list[PubAck] = []
        for item in plan:
            if isinstance(item, int):
                seq = acks[-item - 1].seq if item < 0 else item
                acks.append(PubAck(stream, seq, True))
            else:
                m, hdr = item
                seq = self._append(st, m.subject, m.payload, hdr, m.msg_id, now_ns)
                acks.append(PubAck(stream, seq))
        return acks
