"""`natsbridge dlq ls|show|replay|purge`: the operations, on the running bridge's buffer
(through the admin API) or on the data dir's file while the bridge is stopped.

Both paths run the same code over what the Broker offers (`LocalStore` gives a Store
opened directly the same async methods). Each operation returns a JSON-able dict; the
CLI prints it. Replay moves a dead letter that was in the buffer (it carries
Bridge-Dead-Letter-Seq) back into its stream; an *intake* dead letter (never buffered:
it could not be converted or mapped) is mapped again by its route and buffered, which
only the running bridge can do (`remap`); without it, the answer says so.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from natsbridge.bridge.broker.config import PubAck, StoredMessage, StreamInfo
from natsbridge.bridge.broker.schema import CHUNK
from natsbridge.bridge.broker.store import Store
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import BridgeError, NotFound
from natsbridge.mappings.headers import (
    BRIDGE_BUFFER_KEY,
    BRIDGE_BUFFER_TIME,
    BRIDGE_DEAD_LETTER_SEQ,
    BRIDGE_DEAD_LETTER_STREAM,
    BRIDGE_REASON,
    decode_value,
)

Remap = Callable[[str, Envelope], Awaitable[None]]
"""Map `envelope` again with route `name`'s mapping and buffer it; raise to refuse."""

NEEDS_RUNNING_BRIDGE = (
    "never buffered (it could not be converted or mapped): its route must map it again, "
    "which only the running bridge does: start it and replay again"
)


class Buffers(Protocol):
    """What the operations need of the embedded store (bridge.broker.Broker has it)."""

    async def streams(self) -> list[StreamInfo]: ...
    async def stream_info(self, name: str) -> StreamInfo: ...
    async def messages(self, stream: str, start_seq: int, limit: int) -> list[StoredMessage]: ...
    async def delete_message(self, stream: str, seq: int) -> bool: ...
    async def replay(self, dead_letters: str, seqs: Iterable[int] | None) -> list[PubAck]: ...
    async def flush(self) -> None: ...


class LocalStore:
    """A Store opened directly (the bridge is stopped), with the Broker's async methods."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def streams(self) -> list[StreamInfo]:
        return self.store.streams()

    async def stream_info(self, name: str) -> StreamInfo:
        return self.store.stream_info(name)

    async def messages(self, stream: str, start_seq: int, limit: int) -> list[StoredMessage]:
        return self.store.messages(stream, start_seq, limit)

    async def delete_message(self, stream: str, seq: int) -> bool:
        return self.store.delete_message(stream, seq)

    async def replay(self, dead_letters: str, seqs: Iterable[int] | None) -> list[PubAck]:
        return self.store.replay(dead_letters, seqs)

    async def flush(self) -> None:
        self.store.commit()


class DeadLetterAdmin:
    """ls, show, replay and purge of the dead letters in the embedded buffer."""

    def __init__(self, buffers: Buffers, remap: Remap | None = None) -> None:
        self.buffers = buffers
        self.remap = remap

    async def run(self, asked: dict[str, Any]) -> dict[str, Any]:
        """The operation `asked` names (`dlq_request`'s form): ls, show, replay or purge."""
        action = asked.get("action")
        if action == "ls":
            return await self.ls()
        if action == "show":
            return await self.show(asked["stream"], asked["from_seq"], asked["limit"])
        if action == "replay" and asked.get("destination"):
            raise BridgeError(
                "replaying a dead_letters: destination needs the running bridge "
                "(-c FILE or --admin URL)"
            )
        if action == "replay":
            return await self.replay(asked["stream"], asked["seqs"])
        if action == "purge":
            return await self.purge(asked["stream"], asked["seqs"])
        raise NotFound(f"no dlq action {action!r} (ls, show, replay, purge)")

    async def ls(self) -> dict[str, Any]:
        """Each stream's dead-letter stream and what it holds."""
        entries = []
        for info in await self.buffers.streams():
            if info.config.dead_letter is None:
                continue
            dlq = await self.buffers.stream_info(info.config.dead_letter)
            entries.append(
                {
                    "stream": info.name,
                    "dead_letters": dlq.name,
                    "messages": dlq.messages,
                    "bytes": dlq.bytes,
                    "oldest_age": dlq.oldest_age,
                }
            )
        return {"dead_letters": entries}

    async def show(self, name: str, from_seq: int = 1, limit: int = 20) -> dict[str, Any]:
        """Up to `limit` dead letters of `name` (a stream or its dead-letter stream)."""
        dlq = await self.dead_letter_stream(name)
        messages = await self.buffers.messages(dlq, from_seq, limit)
        total = (await self.buffers.stream_info(dlq)).messages
        return {"stream": dlq, "total": total, "messages": [message_dict(m) for m in messages]}

    async def replay(self, name: str, seqs: list[int] | None = None) -> dict[str, Any]:
        """Put dead letters back: into their stream, or (intake) through their route."""
        dlq = await self.dead_letter_stream(name)
        wanted = None if seqs is None else set(seqs)
        found: set[int] = set()
        intake: list[StoredMessage] = []
        buffered: list[int] = []
        for m in await self._all(dlq):
            if wanted is not None and m.seq not in wanted:
                continue
            found.add(m.seq)
            if BRIDGE_DEAD_LETTER_SEQ in m.headers:
                buffered.append(m.seq)
            else:
                intake.append(m)
        replayed: dict[str, int] = {}
        for ack in await self.buffers.replay(dlq, buffered) if buffered else []:
            replayed[ack.stream] = replayed.get(ack.stream, 0) + 1
        refused = [
            {"seq": seq, "reason": f"no dead letter #{seq} in {dlq}"}
            for seq in sorted((wanted or set()) - found)
        ]
        for m in intake:
            why = await self._replay_intake(dlq, m)
            if why is None:
                route = _first(m, BRIDGE_DEAD_LETTER_STREAM)
                replayed[route] = replayed.get(route, 0) + 1
            else:
                refused.append({"seq": m.seq, "reason": why})
        await self.buffers.flush()
        left = (await self.buffers.stream_info(dlq)).messages
        return {"stream": dlq, "replayed": replayed, "not_replayed": refused, "left": left}

    async def purge(self, name: str, seqs: list[int] | None = None) -> dict[str, Any]:
        """Delete dead letters for good: those of `seqs`, or all of them."""
        dlq = await self.dead_letter_stream(name)
        targets = [m.seq for m in await self._all(dlq)] if seqs is None else seqs
        purged = 0
        for seq in targets:
            purged += await self.buffers.delete_message(dlq, seq)
        await self.buffers.flush()
        left = (await self.buffers.stream_info(dlq)).messages
        return {"stream": dlq, "purged": purged, "left": left}

    async def dead_letter_stream(self, name: str) -> str:
        """`name` if it is a dead-letter stream, else the dead-letter stream of stream `name`."""
        configs = {info.name: info.config for info in await self.buffers.streams()}
        if name not in configs:
            known = ", ".join(sorted(configs)) or "none"
            raise NotFound(f"no stream {name!r} (streams: {known})")
        target = configs[name].dead_letter
        return target if target is not None else name

    async def _all(self, dlq: str) -> list[StoredMessage]:
        found: list[StoredMessage] = []
        start = 1
        while batch := await self.buffers.messages(dlq, start, CHUNK):
            found.extend(batch)
            start = batch[-1].seq + 1
        return found

    async def _replay_intake(self, dlq: str, m: StoredMessage) -> str | None:
        """Map intake dead letter `m` again and buffer it; None, or why it stays."""
        if self.remap is None:
            return NEEDS_RUNNING_BRIDGE
        try:
            await self.remap(_first(m, BRIDGE_DEAD_LETTER_STREAM), intake_envelope(m))
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        await self.buffers.delete_message(dlq, m.seq)
        return None


def intake_envelope(m: StoredMessage) -> Envelope:
    """The message an intake dead letter holds, as its source handed it over."""
    headers = {
        name: values
        for name, values in m.headers.items()
        if name not in (BRIDGE_REASON, BRIDGE_DEAD_LETTER_STREAM, BRIDGE_BUFFER_TIME)
        and name != BRIDGE_BUFFER_KEY
    }
    key = m.headers.get(BRIDGE_BUFFER_KEY)
    stamp = m.headers.get(BRIDGE_BUFFER_TIME)
    return Envelope(
        subject=m.subject,
        payload=m.payload,
        headers=headers,
        key=decode_value(key[0]) if key else None,
        timestamp=float(stamp[0]) if stamp else time.time(),
    )


def message_dict(m: StoredMessage) -> dict[str, Any]:
    """A stored message as JSON (payload in base64)."""
    return {
        "stream": m.stream,
        "seq": m.seq,
        "time": m.time,
        "subject": m.subject,
        "msg_id": m.msg_id,
        "headers": m.headers,
        "payload_base64": base64.b64encode(m.payload).decode(),
    }


def stored_message(d: dict[str, Any]) -> StoredMessage:
    """`message_dict`'s answer read back."""
    return StoredMessage(
        stream=d["stream"],
        seq=d["seq"],
        subject=d["subject"],
        payload=base64.b64decode(d["payload_base64"]),
        headers=d["headers"],
        msg_id=d["msg_id"],
        time=d["time"],
    )


def _first(m: StoredMessage, name: str) -> str:
    return m.headers.get(name, ["-"])[0]
