"""Headers round trip: odd names and values, several values per name, through the broker."""

from __future__ import annotations

import asyncio

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import PermanentError
from natsbridge.mappings.headers import encode_value, foreign_header_name, unescape_header_name
from tests.conformance.flow import needs, receive_n
from tests.conformance.harness import Harness, Native

NATIVE: dict[str, str] = {
    "X-Colons": "a:b: c",
    "lower-case-name": "lower",
    "X-Unicode": "zürich ✓ 東京",
    "X-Empty": "",
    "X-Json": '{"k": [1, 2], "q": "\\""}',
    "X-Backslash": "back\\slash\\n",
    "X-Percent%41": "100%",
    "X-Base64-Lookalike": "base64:aGVsbG8=",
}
"""Odd names and values every broker's own client can write (NATS clients trim values)."""
ENVELOPE: dict[str, list[str]] = {
    "X-Colons": ["a:b: c"],
    "lower-case-name": ["lower"],
    "X-Unicode": ["zürich ✓ 東京"],
    "X-Empty": [""],
    "X-Json": ['{"k": [1, 2], "q": "\\""}'],
    "X-Percent%25": ["100%"],
    "X-Crlf": [encode_value("line1\r\nline2")],
    "X-Padded": [encode_value("  two spaces  ")],
}
"""Headers as a NATS message carries them: names escaped, odd values base64-encoded."""
MULTI: dict[str, list[str]] = {"X-Multi": ["one", "two", "three"], "X-Single": ["1"]}
RESERVED: dict[str, str] = {
    "Nats-Rollup": "all",
    "Nats-Msg-Id": "dup",
    "Nats-Expected-Stream": "OTHER",
    "Bridge-Buffer-Key": "k",
    "Bridge-Origin": "dc2/legacy",
}
"""Headers a legacy producer may set that must not act on NATS or the bridge."""


async def _sink_broker_source(harness: Harness, headers: dict[str, list[str]]) -> None:
    """Send `headers` through the sink, read them back through the source: the same."""
    address = await harness.new_address()
    source = harness.make_source(address)
    await source.connect()  # first: a core NATS or exchange source sees only what follows
    sink = harness.make_sink(address)
    await sink.connect()
    try:
        sent = Envelope(harness.target(address), b"\x00headers\xff", headers)
        assert await sink.send_batch([sent]) == [None]
        [received] = await receive_n(source, 1)
        received.ack(None)
        assert received.error is None, received.error
        assert received.envelope.payload == sent.payload
        assert {name: received.envelope.headers.get(name) for name in headers} == headers
    finally:
        await sink.close()
        await source.close()


def test_envelope_headers_survive_sink_broker_source(harness: Harness) -> None:
    """What a NATS publisher set reaches the legacy broker and comes back the same."""
    headers = ENVELOPE
    if harness.control_values:
        headers = {name: values for name, values in ENVELOPE.items() if name != "X-Crlf"}
    asyncio.run(_sink_broker_source(harness, headers))


def test_a_value_with_control_characters_crosses_or_is_refused_for_good(
    harness: Harness,
) -> None:
    """CR/LF in a value: carried back unchanged, or (where the broker cannot) refused."""
    crlf = {"X-Crlf": ENVELOPE["X-Crlf"]}
    if not harness.control_values:
        asyncio.run(_sink_broker_source(harness, crlf))
        return

    async def refused() -> None:
        address = await harness.new_address()
        sink = harness.make_sink(address)
        await sink.connect()
        try:
            envelope = Envelope(harness.target(address), b"crlf", crlf)
            [error] = await sink.send_batch([envelope])
            assert isinstance(error, PermanentError), error
        finally:
            await sink.close()

    asyncio.run(refused())


def test_several_values_of_one_header_survive_sink_broker_source(harness: Harness) -> None:
    """NATS headers may repeat a name: every value comes back, in order."""
    needs(harness.multi_values)
    asyncio.run(_sink_broker_source(harness, MULTI))


def test_native_headers_survive_source_to_sink(harness: Harness) -> None:
    """A legacy producer's headers, read by the source and written by the sink of the same
    kind (a route from the broker to itself), reach the legacy consumer unchanged."""

    async def scenario() -> None:
        inbound, outbound = await harness.new_address(), await harness.new_address()
        pairs = tuple(NATIVE.items())
        source = harness.make_source(inbound)
        await source.connect()
        reader = await harness.reader(outbound)
        sink = harness.make_sink(outbound)
        await sink.connect()
        try:
            await harness.produce(inbound, [Native(b"native", pairs)])
            [received] = await receive_n(source, 1)
            assert received.error is None, received.error
            envelope = received.envelope
            forwarded = Envelope(harness.target(outbound), envelope.payload, envelope.headers)
            assert await sink.send_batch([forwarded]) == [None]
            received.ack(None)
            [arrived] = await reader.read(1)
            assert arrived.payload == b"native"
            assert {n: v for n, v in arrived.headers if n in NATIVE} == dict(pairs)
        finally:
            await sink.close()
            await reader.close()
            await source.close()

    asyncio.run(scenario())


def test_reserved_header_names_are_renamed_reversibly(harness: Harness) -> None:
    """A legacy producer's Nats-*/Bridge-* headers arrive renamed (and can be renamed back);
    Bridge-Origin is kept as is: loop prevention reads it."""
    needs(harness.renames_reserved)

    async def scenario() -> None:
        address = await harness.new_address()
        source = harness.make_source(address)
        await source.connect()
        try:
            await harness.produce(address, [Native(b"hostile", tuple(RESERVED.items()))])
            [message] = await receive_n(source, 1)
            message.ack(None)
            assert message.error is None, message.error
            headers = message.envelope.headers
            for name, value in RESERVED.items():
                renamed = foreign_header_name(name)
                assert headers.get(renamed) == [value], (name, headers)
                assert unescape_header_name(renamed) == name
            assert not [n for n in headers if n.lower().startswith("nats-")], headers
            assert headers["Bridge-Origin"] == ["dc2/legacy"]
        finally:
            await source.close()

    asyncio.run(scenario())
