"""The STOMP sink: SEND with a receipt per message, pipelined.

`send_batch()` builds each SEND frame on the loop (destination = the rendered ``to.destination``,
checked against the dialect), asks the client for a receipt id and queues the frame for
the writer thread, which writes whatever is queued in one ``sendall``; then it awaits
the RECEIPTs. Many sends are in flight at once, each awaiting its receipt; the
receiver thread resolves the futures of a burst of RECEIPT frames with one
`call_soon_threadsafe`. Frames go out in call order.

What a receipt means: ActiveMQ sends it once the message is stored (a SEND with a
receipt is a synchronous send; ``persistent:true`` is written to its store first);
RabbitMQ sends it once the message is confirmed (the STOMP plugin uses publisher
confirms for receipted SENDs).

Refusals: an ERROR frame naming the receipt (ActiveMQ does) fails that send with its
typed error (connectors.stomp.errors; permanent ones are dead-lettered by the runtime).
RabbitMQ's ERROR frames name no receipt, and RabbitMQ closes the connection after
them: with one send in flight the error is that send's; with several, nobody can tell
which one it was, so they all fail as ConnectionLost and, after the reconnect, the sink
sends that many messages one at a time ("isolation"), so that the refused one is found
and only it is dead-lettered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import BridgeError, ConnectionLost, PermanentError
from natsbridge.bridge.kind import remembered
from natsbridge.bridge.threads import Confirms, failed
from natsbridge.connectors.stomp.client import DEFAULT_CLOSE_TIMEOUT_S, StompClient
from natsbridge.connectors.stomp.config import StompConnection, StompSink
from natsbridge.connectors.stomp.message import send_frame
from natsbridge.mappings.stomp import parse_destination

log = logging.getLogger("natsbridge.stomp")

MAX_VALID_DESTINATIONS = 10_000
"""Destinations remembered as valid for the dialect (the set starts over beyond this)."""


class StompDestinationSink:
    """Sink sending to STOMP destinations with receipts; see the package docstring."""

    def __init__(self, route: Route, connection: StompConnection, connection_name: str) -> None:
        spec = route.sink
        assert isinstance(spec, StompSink)
        self._config = connection
        self._route_name = route.name
        self.dialect = connection.dialect
        self.persistent = spec.persistent
        self._client: StompClient | None = None
        self._generation = 0
        self._error: BridgeError = ConnectionLost("stomp: sink not connected")
        self._confirms = Confirms()
        self._isolate = 0  # sends still to make one at a time (see the module docstring)
        self._queued = 0  # sends waiting for or holding `_order`
        self._order: asyncio.Lock | None = None
        # a destination is parsed against the dialect once, not per message
        self._check = remembered(
            functools.partial(parse_destination, dialect=self.dialect), MAX_VALID_DESTINATIONS
        )

    # ------------------------------------------------------------ Sink

    async def connect(self) -> None:
        """Connect and log in."""
        await self.close()
        self._generation += 1
        client = StompClient(self._config, f"{self._route_name} sink")
        client.on_end = functools.partial(self._on_end, self._generation)
        self._client = client
        try:
            await client.open()
        except BaseException:
            self._client = None
            self._error = ConnectionLost("stomp: sink not connected")
            raise
        if self._isolate:
            log.info(
                "stomp sink %s: sending the next %d messages one at a time to find the "
                "one the broker refused",
                self._route_name,
                self._isolate,
            )

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """SEND each envelope to its subject (a destination); settled by its RECEIPT."""
        waits: list[asyncio.Future[None]] = []
        for envelope in envelopes:
            try:
                self._check(envelope.subject)
                if self._isolate == 0 and self._queued == 0:
                    waits.append(self._write(envelope))
                else:
                    waits.append(self._in_turn(envelope))
            except Exception as exc:  # this message's own error; the next may succeed
                waits.append(failed(exc))
        return await self._confirms.wait(waits)

    def _in_turn(self, envelope: Envelope) -> asyncio.Task[None]:
        """While isolating: sends take turns through a lock, so that call order is kept."""
        self._queued += 1  # now, so that the sends after this one queue behind it
        return asyncio.ensure_future(self._take_turn(envelope))

    async def _take_turn(self, envelope: Envelope) -> None:
        order = self._order
        if order is None:
            order = self._order = asyncio.Lock()
        try:
            async with order:
                if self._isolate > 0:
                    self._isolate -= 1
                    await self._write(envelope)  # alone: the next one waits for its receipt
                    return
                future = self._write(envelope)
        finally:
            self._queued -= 1
        await future

    async def close(self) -> None:
        """Wait (bounded) for outstanding receipts, then DISCONNECT. Idempotent."""
        client = self._client
        if client is None:
            return
        await self._confirms.drain(DEFAULT_CLOSE_TIMEOUT_S, f"stomp sink {self._route_name}")
        if self._client is client:
            self._client = None
            self._error = ConnectionLost("stomp: sink closed")
        await client.close()

    # ------------------------------------------------------------ asyncio side

    def _write(self, envelope: Envelope) -> asyncio.Future[None]:
        client = self._client
        if client is None:
            raise self._error
        receipt, future = client.expect()
        try:
            frame = send_frame(envelope, envelope.subject, receipt, self.persistent, self.dialect)
        except BaseException:
            client.forget(receipt)
            raise
        client.write(frame)
        return future

    def _on_end(self, generation: int, error: BridgeError) -> None:
        """The connection ended (its pending receipts have failed already)."""
        if generation != self._generation:
            return
        if isinstance(error, PermanentError) and self._confirms.pending > 1:
            # An ERROR frame that named no receipt, with several sends in flight.
            self._isolate = max(self._isolate, self._confirms.pending)
        if self._client is not None:
            log.warning("stomp sink %s: %s", self._route_name, error)
            self._client = None
            self._error = ConnectionLost(f"stomp: sink not connected ({error})")
