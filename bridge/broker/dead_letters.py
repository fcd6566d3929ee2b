"""Dead letters in the embedded store (a layer of bridge.broker.store.Store): a message
moved to its stream's dead-letter stream with the reason, and replayed back."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from natsbridge.bridge.broker.append import AppendStore
from natsbridge.bridge.broker.config import (
    PubAck,
    StoredMessage,
    StreamConfig,
)
from natsbridge.bridge.broker.schema import (
    CHUNK,
    decode_headers,
    encode_headers,
    stored_size,
)
from natsbridge.bridge.broker.state import (
    ConsumerState,
    StreamState,
)
from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import (
    StoreError,
)
from natsbridge.mappings.headers import (
    BRIDGE_DEAD_LETTER_SEQ,
    BRIDGE_DEAD_LETTER_STREAM,
    BRIDGE_DELIVERIES,
    BRIDGE_REASON,
)

log = logging.getLogger("natsbridge.broker")

DEAD_LETTER_HEADERS = frozenset(
    {BRIDGE_REASON, BRIDGE_DEAD_LETTER_STREAM, BRIDGE_DEAD_LETTER_SEQ, BRIDGE_DELIVERIES}
)
"""Headers a dead letter gets, removed again when it is replayed into its stream."""


class DeadLetterStore(AppendStore):
    """Dead letters: write them, move a pending message to them, replay them."""

    def dead_letter(
        self,
        stream: str,
        subject: str,
        payload: bytes,
        headers: Headers | None,
        reason: str,
    ) -> PubAck:
        """Write a message that never reached `stream` to `stream`'s dead-letter stream.

        The dead letter carries `reason` in Bridge-Reason and `stream` in
        Bridge-Dead-Letter-Stream. Raises StoreError when `stream` has no dead-letter
        stream configured.
        """
        self._check_writable()
        st = self._stream(stream)
        dlq = self._dead_letter_stream(st)
        if dlq is None:
            raise StoreError(f"stream {stream!r} has no dead-letter stream")
        marked = dict(headers or {})
        marked[BRIDGE_REASON] = [reason]
        marked[BRIDGE_DEAD_LETTER_STREAM] = [stream]
        now_ns = self._clock.time_ns()
        return PubAck(
            dlq.config.name,
            self._append(dlq, subject, payload, encode_headers(marked), None, now_ns),
        )

    def _dead_letter_stream(self, st: StreamState) -> StreamState | None:
        name = st.config.dead_letter
        if name is None:
            return None
        dlq = self._streams.get(name)
        if dlq is None:  # deleted since: recreate rather than lose the message
            self.add_stream(StreamConfig(name=name))
            dlq = self._streams[name]
        return dlq

    def _dead_letter_pending(self, c: ConsumerState, seq: int, reason: str) -> None:
        """Move pending message `seq` of `c` to the dead-letter stream and settle it."""
        self._flush()  # a buffered eviction may remove it first
        self._begin()
        p = c.pending.pop(seq, None)
        if p is None:
            return
        st = c.stream
        dlq = self._dead_letter_stream(st)
        if dlq is not None:
            row = self._conn.execute(
                "SELECT subject, msg_id, headers, payload FROM messages WHERE stream=? AND seq=?",
                (st.id, seq),
            ).fetchone()
            if row is not None:
                subject, msg_id, headers, payload = row
                marked = decode_headers(headers)
                marked[BRIDGE_REASON] = [reason]
                marked[BRIDGE_DEAD_LETTER_STREAM] = [st.config.name]
                marked[BRIDGE_DEAD_LETTER_SEQ] = [str(seq)]
                marked[BRIDGE_DELIVERIES] = [str(p.deliveries)]
                self._append(
                    dlq, subject, payload, encode_headers(marked), msg_id, self._clock.time_ns()
                )
        else:
            log.warning(
                "stream %r has no dead-letter stream: dropping seq %d (%s)",
                st.config.name,
                seq,
                reason,
            )
        c.dead_lettered += 1
        self._settle(c, seq, p)

    def replay(self, dead_letters: str, seqs: Iterable[int] | None = None) -> list[PubAck]:
        """Move dead letters back to the stream they came from (Bridge-Dead-Letter-Stream).

        Only messages that were in a stream (they carry Bridge-Dead-Letter-Seq) are moved;
        the dead-letter headers are removed. Returns the new positions, in order. The
        replayed message gets a new sequence and is not checked against the dedup window
        (it would match itself).
        """
        self._check_writable()
        dlq = self._stream(dead_letters)
        wanted = None if seqs is None else set(seqs)
        moved: list[PubAck] = []
        start = 1
        while True:
            batch = self.messages(dead_letters, start, CHUNK)
            if not batch:
                break
            start = batch[-1].seq + 1
            for m in batch:
                if wanted is not None and m.seq not in wanted:
                    continue
                ack = self._replay_one(dlq.config.name, m)
                if ack is not None:
                    moved.append(ack)
        return moved

    def _replay_one(self, dead_letters: str, m: StoredMessage) -> PubAck | None:
        """Move dead letter `m` back into its stream; None if it was never in one."""
        origin = m.headers.get(BRIDGE_DEAD_LETTER_STREAM, [None])[0]
        if origin is None or BRIDGE_DEAD_LETTER_SEQ not in m.headers:
            return None
        target = self._stream(origin)
        headers = {k: v for k, v in m.headers.items() if k not in DEAD_LETTER_HEADERS}
        hdr = encode_headers(headers)
        self._check_room(target, 1, stored_size(m.subject, hdr, m.payload))
        seq = self._append(target, m.subject, m.payload, hdr, m.msg_id, self._clock.time_ns())
        self.delete_message(dead_letters, m.seq)
        return PubAck(origin, seq)
