"""Source definitions: order, at least once with nacks and reopen, reconnect, hostile messages."""

from __future__ import annotations

import asyncio

from natsbridge.bridge.connector import Incoming
from natsbridge.bridge.errors import ConnectionLost, PermanentError, RetryableError
from tests.conformance.flow import (
    needs,
    payloads_of,
    receive_for,
    receive_n,
    receive_quiet,
    receive_until,
)
from tests.conformance.harness import Harness, Kicker, Native, header_pairs
from tests.e2e.hostile import TAIL, messages
from tests.e2e.hostile_readers import hid_of

COUNT = 100


def test_receives_in_broker_order_and_acked_messages_stay_acked(harness: Harness) -> None:
    async def scenario() -> None:
        address = await harness.new_address()
        source = harness.make_source(address)
        await source.connect()
        try:
            sent = [f"order-{i:03d}".encode() for i in range(COUNT)]
            await harness.produce(
                address, [Native(p, (("X-Seq", str(i)),)) for i, p in enumerate(sent)]
            )
            received = await receive_n(source, COUNT)
            assert payloads_of(received) == sent
            assert [m.envelope.header("X-Seq") for m in received] == [str(i) for i in range(COUNT)]
            assert all(m.error is None and m.envelope.origin is not None for m in received)
            for message in received:
                message.ack(None)
                message.ack(None)  # settling twice is harmless
            assert payloads_of(await receive_quiet(source, 1.0)) == []
        finally:
            await source.close()

    asyncio.run(scenario())


def test_nacked_and_unsettled_messages_come_again_acked_ones_do_not(harness: Harness) -> None:
    """At least once: ack some, nack some (redelivered at once), leave some; close, reopen."""
    needs(harness.redelivery)
    sent = [f"alo-{i}".encode() for i in range(10)]
    acked = {sent[i] for i in (0, 1, 2, 5, 8)}
    nacked = {sent[i] for i in (3, 6)}
    unsettled = set(sent) - acked - nacked

    async def scenario() -> None:
        address = await harness.new_address()
        first = harness.make_source(address)
        await first.connect()
        try:
            await harness.produce(address, [Native(p) for p in sent])
            received = await receive_n(first, len(sent))
            assert payloads_of(received) == sent
            for message in received:
                payload = message.envelope.payload
                if payload in acked:
                    message.ack(None)
                elif payload in nacked:
                    message.ack(RetryableError("conformance: the sink is busy"))
            # A nack gives the message back while the source stays open; left unsettled now.
            again = await receive_until(
                first,
                lambda got: nacked <= set(payloads_of(got)),
                30,
                f"the nacked {sorted(nacked)} to come again",
            )
            assert not set(payloads_of(again)) & set(sent[:3])
        finally:
            await first.close()
        second = harness.make_source(address)
        await second.connect()
        try:
            reopened = await receive_until(
                second,
                lambda got: nacked | unsettled <= set(payloads_of(got)),
                30,
                f"{sorted(nacked | unsettled)} after the reopen",
            )
            reopened += await receive_quiet(second)
            for message in reopened:
                message.ack(None)
            seen = set(payloads_of(reopened))
            assert not seen & set(sent[:3]), "an acked message came again"
            if harness.acks_each:
                assert not seen & acked, "an acked message came again"
        finally:
            await second.close()

    asyncio.run(scenario())


def test_survives_a_dropped_connection_without_losing_messages(harness: Harness) -> None:
    """The connector's sockets are shut down under it; the flow resumes, nothing is lost.

    If the source reported the drop (ConnectionLost, then connect() again, as the runtime
    does) the messages it had handed out unsettled come again; if it hid the drop (a
    driver that reconnects by itself) their acks must still count: after a reopen nothing
    comes back.
    """

    async def scenario() -> None:
        address = await harness.new_address()
        source = harness.make_source(address)
        kicker = Kicker(harness.ports())
        await source.connect()
        lost: list[ConnectionLost] = []
        try:
            before = [f"before-{i}".encode() for i in range(6)]
            await harness.produce(address, [Native(p) for p in before])
            received = await receive_n(source, len(before))
            for message in received[:3]:
                message.ack(None)
            await asyncio.sleep(0.5)  # let those acks reach the broker before the drop
            assert kicker.kick() > 0, "found no connection of the source to drop"
            # Probe until the flow is back: core NATS drops what is published meanwhile.
            seen: list[bytes] = []
            for probe in range(30):
                await harness.produce(address, [Native(f"probe-{probe}".encode())])
                got = await receive_for(source, 1.0, lost)
                for message in got:
                    message.ack(None)
                seen += payloads_of(got)
                if any(p.startswith(b"probe-") for p in seen):
                    break
            else:
                raise AssertionError("the source never received again after the drop")
            after = [f"after-{i}".encode() for i in range(6)]
            await harness.produce(address, [Native(p) for p in after])
            redelivered = bool(lost) and harness.redelivery is None
            expected = set(after) | (set(before[3:]) if redelivered else set())
            rest = await receive_until(
                source,
                lambda got: expected <= set(seen) | set(payloads_of(got)),
                40,
                f"{sorted(expected)} after the drop",
                lost,
            )
            for message in [*received[3:], *rest]:
                message.ack(None)  # the old copies: a no-op, or their ack still counts
        finally:
            await source.close()
        if harness.redelivery is not None:
            return
        reopened = harness.make_source(address)
        await reopened.connect()
        try:
            again = await receive_quiet(reopened, 2.0)
            for message in again:
                message.ack(None)
            assert not set(payloads_of(again)) & set(before), "acked before or after the drop"
        finally:
            await reopened.close()

    asyncio.run(scenario())


def test_hostile_messages_are_all_handed_over_and_the_flow_continues(harness: Harness) -> None:
    """Every message the broker took comes out: converted, or with `error` set, never lost."""
    cases = harness.hostile_cases()
    needs(None if cases else "the harness has no hostile producer")

    async def scenario() -> None:
        address = await harness.new_address()
        source = harness.make_source(address)
        await source.connect()
        try:
            batch = messages("conf>hostile", cases)
            tail = messages("conf>tail", [TAIL] * 3)
            refused = await harness.produce_hostile(address, [*batch, *tail])
            sent = {m.hid: m.case.kind for m in [*batch, *tail] if m.hid not in refused}
            assert {m.hid for m in tail} <= set(sent), refused

            def hid(message: Incoming) -> str:
                return hid_of(message.envelope.payload, header_pairs(message.envelope))

            got = await receive_until(
                source, lambda got: set(sent) <= {hid(m) for m in got}, 60, "every hostile id"
            )
            got += await receive_quiet(source, 1.0)
            unreadable: set[str] = set()
            for message in got:
                if message.error is not None:
                    assert isinstance(message.error, PermanentError), message.error
                    unreadable.add(sent[hid(message)])
                message.ack(None)
            assert {hid(m) for m in got} == set(sent)
            assert harness.unreadable <= unreadable, (
                f"expected Incoming.error for: {harness.unreadable - unreadable}"
            )
            assert not unreadable - harness.unreadable, f"unreadable: {unreadable}"
        finally:
            await source.close()

    asyncio.run(scenario())
