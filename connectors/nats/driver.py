"""Every place the NATS connector touches nats-py's private internals, behind a version guard.

`NatsClient` is nats-py's `Client` with these overrides of private methods (nats-py as
tested: `TESTED`):

* `_parse_header_lines`, `_process_headers`, `_build_message`: received headers keep
  repeated names (`MultiHeaders`); subjects and status lines that are not UTF-8 are
  read leniently instead of making nats-py reconnect and be sent the same message again.
* `_send_publish`: a `HeaderBlock` is written as it is (validated once by the bridge).
* `_process_msg`: raw subscriptions (`subscribe_raw`), no Msg and no task per message,
  for the replies the bridge reads itself (PubAcks, JetStream pulls).
* `publish_many`: many PUB/HPUB commands as one write (`_send_command`, `_flush_pending`,
  `_flush_queue`, `_pending_data_size`, `_max_pending_size`).

Importing this module checks the installed nats-py against `TESTED` and that those
methods are there, and raises DriverVersionError naming both otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nats.errors
import nats.js.api
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.protocol.command import hpub_cmd, pub_cmd

from natsbridge.bridge.drivers import DriverVersionError, require
from natsbridge.connectors.nats.message import (
    HeaderBlock,
    MultiHeaders,
    read_header_block,
    subject_text,
)

DISTRIBUTION = "nats-py"
TESTED = ((2, 9), (2, 17))
"""nats-py >=2.9,<2.17 (pyproject.toml pins the same range)."""

VERSION = require(DISTRIBUTION, *TESTED)
_OVERRIDDEN = (
    "_parse_header_lines",
    "_process_headers",
    "_build_message",
    "_send_publish",
    "_process_msg",
    "_send_command",
    "_flush_pending",
)
_missing = [name for name in _OVERRIDDEN if not callable(getattr(Client, name, None))]
if _missing:  # pragma: no cover
    raise DriverVersionError(f"nats-py {VERSION} lacks {', '.join(_missing)}")


RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]
"""Called on the read loop with a message as received: subject, reply, data, header block."""


async def _ignore(msg: Msg) -> None:
    raise AssertionError("a raw subscription's messages never reach nats-py's callback")


class NatsClient(Client):
    """nats-py's client: received headers parsed with `MultiHeaders` (repeats kept), a
    `HeaderBlock` published as it is, and raw subscriptions (`subscribe_raw`).

    These hook into nats-py internals (`_parse_header_lines`, `_send_publish`,
    `_process_msg`); the connector tests cover them against the nats-py version installed.
    """

    def __init__(self) -> None:
        super().__init__()
        self._raw_handlers: dict[int, RawHandler] = {}

    async def subscribe_raw(self, subject: str, handler: RawHandler) -> Subscription:
        """Subscribe with `handler` called synchronously for each message, as received.

        For replies the bridge reads itself (PubAcks): no Msg object, no per-subscription
        queue and task per message. nats-py still owns the subscription (SUB, resubscribe
        after a reconnect, unsubscribe).
        """
        sub = await self.subscribe(subject, cb=_ignore)
        self._raw_handlers[sub._id] = handler
        return sub

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self._raw_handlers.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        handler(subject, reply, data, headers)

    async def publish_many(
        self, messages: Sequence[tuple[str, str, HeaderBlock | None, bytes]]
    ) -> None:
        """Publish (subject, reply, header block, payload) messages, in order, as one write.

        One PUB or HPUB command each, queued as one buffer, instead of a `publish()` call
        (its checks, command and buffer append) per message: for JetStream acks and for
        the JetStream sink's windows. The caller has checked payload sizes. Raises as
        `publish()` does when closed or draining, or while reconnecting with the pending
        buffer full.
        """
        if self.is_closed:
            raise nats.errors.ConnectionClosedError
        if self.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        size = 0
        commands = []
        for subject, reply, headers, payload in messages:
            if not subject:
                raise nats.errors.BadSubjectError
            if headers is None:
                commands.append(pub_cmd(subject, reply, payload))
            else:
                commands.append(hpub_cmd(subject, reply, headers, payload))
            size += len(payload)
        command = b"".join(commands)
        if not self.is_connected and (
            self._max_pending_size <= 0
            or len(command) + self._pending_data_size > self._max_pending_size
        ):
            raise nats.errors.OutboundBufferLimitError
        self.stats["out_msgs"] += len(commands)
        self.stats["out_bytes"] += size
        await self._send_command(command)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        return MultiHeaders.parse(raw)

    # nats-py decodes subjects and status lines strictly inside its read loop: read them
    # as `subject_text` does, and a status line that is not UTF-8 leniently.

    def _build_message(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
    ) -> Msg:
        return self.msg_class(
            subject=subject_text(subject),
            reply=subject_text(reply),
            data=data,
            headers=headers,
            _client=self,
            _sid=sid,
        )

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        try:
            return await super()._process_headers(headers)  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            code, description, lines = read_header_block(headers)
            parsed = MultiHeaders()
            parsed.all = lines
            for name, values in lines.items():
                dict.__setitem__(parsed, name, values[-1])
            if code.isdigit():
                dict.__setitem__(parsed, nats.js.api.Header.STATUS.value, code)
                dict.__setitem__(parsed, nats.js.api.Header.DESCRIPTION.value, description)
            return parsed

    async def _send_publish(
        self, subject: str, reply: str, payload: bytes, payload_size: int, headers: Any
    ) -> None:
        if not isinstance(headers, HeaderBlock):
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        if not subject:
            raise nats.errors.BadSubjectError
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(hpub_cmd(subject, reply, headers, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()
