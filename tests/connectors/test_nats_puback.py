"""_PubAcks._on_reply: a PubAck as received settles its publish (pure logic, no broker)."""

from __future__ import annotations

import asyncio

import pytest

from natsbridge.bridge.errors import ConnectionLost, RetryableError
from natsbridge.connectors.nats.errors import NoResponders
from natsbridge.connectors.nats.sink import _PubAcks

PREFIX = "_INBOX.abc."


def settle(data: bytes, headers: bytes | None = None) -> BaseException | None:
    """Feed one reply for publish #1; what its future settled with."""

    async def scenario() -> BaseException | None:
        acks = _PubAcks()
        acks._prefix = PREFIX
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acks._waiting[1] = (future, "orders.eu")
        acks._on_reply(f"{PREFIX}1".encode(), b"", data, headers)
        assert future.done() and not acks._waiting
        return future.exception()

    return asyncio.run(scenario())


def test_stored_and_duplicate_are_success() -> None:
    assert settle(b'{"stream":"ORDERS","seq":7}') is None
    assert settle(b'{"stream":"ORDERS","seq":7,"duplicate":true}') is None


def test_an_error_reply_is_the_projects_error_naming_the_subject() -> None:
    error = settle(
        b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}'
    )
    assert isinstance(error, RetryableError)
    assert "orders.eu" in str(error) and "10077" in str(error)


def test_no_responders_status() -> None:
    assert isinstance(settle(b"", b"NATS/1.0 503\r\n\r\n"), NoResponders)


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b'{"error": '])
def test_unreadable_reply_is_connection_lost(data: bytes) -> None:
    assert isinstance(settle(data), ConnectionLost)


def test_foreign_and_unknown_tokens_are_ignored() -> None:
    async def scenario() -> None:
        acks = _PubAcks()
        acks._prefix = PREFIX
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acks._waiting[1] = (future, "orders.eu")
        acks._on_reply(f"{PREFIX}x".encode(), b"", b"{}", None)
        acks._on_reply(f"{PREFIX}2".encode(), b"", b"{}", None)
        assert not future.done() and 1 in acks._waiting

    asyncio.run(scenario())
