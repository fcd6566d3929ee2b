"""`buffer: jetstream` on the 3-node cluster: what a replica stores, another can take."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import StoreError, StreamFull
from natsbridge.bridge.runtime.buffer import Buffered
from natsbridge.connectors.nats.buffer import (
    REASON_HEADER,
    JetStreamBuffers,
    JetStreamRouteBuffer,
    _envelope,
    _stored_headers,
    dead_letter_stream,
    stream_name,
)


def config_of(tmp_path: Path, urls: list[str], bridge_id: str, buffer: str) -> Config:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "version: 1\n"
        f"bridge: {{id: {bridge_id}, buffer: {buffer}}}\n"
        f"connections: {{cluster: {{kind: nats, servers: {json.dumps(urls)}}}}}\n"
        "routes:\n"
        "  - {name: r.one, from: {connection: cluster, subject: 'in.>'},\n"
        "     to: {connection: cluster, subject: out}, max_in_flight: 100}\n"
    )
    return load_config(path, {})


Opened = Callable[[], Awaitable[tuple[JetStreamBuffers, JetStreamRouteBuffer]]]


@pytest.fixture
def replica(tmp_path: Path, nats_cluster_urls: list[str], unique_name: str) -> Iterator[Opened]:
    """Opens a replica's buffer of one route; the streams are deleted after the test."""
    buffer = "{mode: jetstream, connection: cluster, replicas: 3, ack_wait: 1s, max_msgs: 3}"
    config = config_of(tmp_path, nats_cluster_urls, unique_name, buffer)
    [route] = config.routes

    async def open_one() -> tuple[JetStreamBuffers, JetStreamRouteBuffer]:
        buffers = JetStreamBuffers("cluster", config.connections["cluster"], config.bridge)
        await buffers.open()
        return buffers, await buffers.route(route)

    yield open_one

    async def delete() -> None:
        client = await nats.connect(servers=nats_cluster_urls)
        stream = stream_name(unique_name, route.name)
        for name in (stream, dead_letter_stream(stream)):
            await client.jetstream().delete_stream(name)
        await client.close()

    asyncio.run(delete())


def test_stream_names_keep_bridge_and_route_apart() -> None:
    assert stream_name("b.x", "r.one") == "natsbridge~b+x~r+one"
    assert stream_name("b", "x.r") != stream_name("b.x", "r")


async def take_all(buffer: JetStreamRouteBuffer, count: int) -> list[Buffered]:
    taken: list[Buffered] = []
    for _ in range(50):  # bounded: each take waits up to 1s
        taken += await buffer.take(count - len(taken), 1.0)
        if len(taken) >= count:
            break
    return taken


def test_a_dead_replica_strands_nothing(replica: Opened) -> None:
    async def scenario() -> tuple[list[int], list[int], list[int]]:
        first, buffer_a = await replica()
        second, buffer_b = await replica()
        try:
            await buffer_a.put([Envelope("s", f"m{i}".encode()) for i in range(3)])
            with pytest.raises(StreamFull):
                await buffer_b.put([Envelope("s", b"one too many")])
            taken_a = [item.seq for item in await buffer_a.take(3, 5.0)]
            await first.close()  # replica A dies with all three taken and unsettled
            items = await take_all(buffer_b, 3)  # after ack_wait (1s)
            taken_b = [item.seq for item in items]
            await buffer_b.settle(taken_b)
            return taken_a, taken_b, [item.deliveries for item in items]
        finally:
            await second.close()

    taken_a, taken_b, deliveries = asyncio.run(scenario())
    assert len(taken_a) == 3 and sorted(taken_b) == sorted(taken_a)
    assert deliveries == [2, 2, 2]


def test_dead_letters_keep_the_reason_and_leave_the_backlog(
    replica: Opened, nats_cluster_urls: list[str], unique_name: str
) -> None:
    async def scenario() -> tuple[int, int, int, dict[str, str]]:
        buffers, buffer = await replica()
        try:
            await buffer.put([Envelope("s", b"bad", {"X": ["1", "2"]}), Envelope("s", b"ok")])
            before = (await buffer.backlog()).depth
            bad, good = await buffer.take(2, 5.0)
            await buffer.dead_letter(bad.envelope, "refused: too big", bad.seq)
            await buffer.settle([good.seq])
            for _ in range(100):  # the acks go through the stream's RAFT group
                after = await buffer.backlog()
                if after.depth == 0:
                    break
                await asyncio.sleep(0.05)
            js = buffers.js
            assert js is not None
            dead = await js.get_msg(dead_letter_stream(buffer.stream), 1)
            return before, after.depth, after.bytes, dict(dead.headers or {})
        finally:
            await buffers.close()

    before, after, stored_bytes, dead_headers = asyncio.run(scenario())
    assert (before, after, stored_bytes) == (2, 0, 0)
    assert json.loads(dead_headers[REASON_HEADER]) == "refused: too big"
    assert json.loads(dead_headers["Bridge-Buffer"])["h"] == {"X": ["1", "2"]}


header_names = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1
)
header_values = st.lists(st.text(), min_size=1, max_size=3)


@given(
    subject=st.text(min_size=1),
    payload=st.binary(),
    headers=st.dictionaries(header_names, header_values, max_size=4),
    key=st.none() | st.binary(),
    msg_id=st.none() | st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
    timestamp=st.floats(0, 2e9),
)
def test_an_envelope_comes_back_as_it_was_stored(
    subject: str,
    payload: bytes,
    headers: dict[str, list[str]],
    key: bytes | None,
    msg_id: str | None,
    timestamp: float,
) -> None:
    sent = Envelope(subject, payload, headers, msg_id=msg_id, key=key, timestamp=timestamp)
    stored = _stored_headers(sent)
    assert all("\r" not in v and "\n" not in v for v in stored.values())
    back = _envelope(Msg(None, "natsbridge.buffer.x", data=payload, headers=stored))  # type: ignore[arg-type]
    assert (back.subject, back.payload, back.headers) == (subject, payload, headers)
    assert (back.key, back.msg_id, back.timestamp) == (key, msg_id, timestamp)


def test_a_stream_the_cluster_has_no_room_for_says_what_to_change(
    tmp_path: Path, nats_cluster_urls: list[str], unique_name: str
) -> None:
    """Each buffer stream reserves its max_bytes on its replicas' servers: more than they
    have (the dev cluster's nodes: 8 GiB of file store) is refused with the way out."""
    buffer = "{mode: jetstream, connection: cluster, replicas: 3, max_bytes: 100GiB}"
    config = config_of(tmp_path, nats_cluster_urls, unique_name, buffer)
    [route] = config.routes

    async def open_route() -> str:
        buffers = JetStreamBuffers("cluster", config.connections["cluster"], config.bridge)
        await buffers.open()
        try:
            with pytest.raises(StoreError) as refused:
                await buffers.route(route)
            assert buffers.js is not None
            with pytest.raises(nats.js.errors.NotFoundError):
                await buffers.js.stream_info(stream_name(unique_name, route.name))
        finally:
            await buffers.close()
        return str(refused.value)

    message = asyncio.run(open_route())
    assert message.startswith("JetStream buffer of route 'r.one': ")
    assert "insufficient storage" in message  # the server's words
    assert f"max_bytes ({100 * 1024**3} bytes) on each of its 3 replicas' servers" in message
    assert "lower buffer.max_bytes" in message
