"""header_block and read_header_block: header blocks written and read as on the wire (no broker)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.errors import HeaderError
from natsbridge.connectors.nats.message import MultiHeaders, header_block, read_header_block

PREFIX = b"NATS/1.0\r\n"
# RFC 7230 token names (what NATS and nats-py accept) and values without CR/LF; the
# receiving side strips a value's surrounding whitespace, so none is generated there.
names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
    min_size=1,
    max_size=20,
)
values = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
    max_size=30,
).map(str.strip)
headers = st.dictionaries(names, st.lists(values, min_size=1, max_size=3), max_size=6)


def read_back(block: bytes) -> dict[str, list[str]]:
    assert block.startswith(PREFIX) and block.endswith(b"\r\n\r\n")
    return MultiHeaders.parse(block[len(PREFIX) :]).all


@given(headers)
def test_round_trip_keeps_every_value_in_order(sent: dict[str, list[str]]) -> None:
    block = header_block(sent)
    if not sent:
        assert block is None
        return
    assert block is not None
    assert read_back(block) == sent


@given(headers, values)
def test_extra_replaces_a_same_named_header(sent: dict[str, list[str]], value: str) -> None:
    block = header_block({**sent, "Nats-Msg-Id": ["from-the-source"]}, [("Nats-Msg-Id", value)])
    assert block is not None
    assert read_back(block) == {**sent, "Nats-Msg-Id": [value]}


def test_example_on_the_wire() -> None:
    block = header_block({"X-A": ["1", "2"]}, [("Nats-Expected-Stream", "S")])
    assert block == b"NATS/1.0\r\nX-A: 1\r\nX-A: 2\r\nNats-Expected-Stream: S\r\n\r\n"


@pytest.mark.parametrize(
    "bad",
    [{"X A": ["v"]}, {"": ["v"]}, {"X-A": ["line\r\nInjected: yes"]}, {"X-A": ["a\nb"]}],
)
def test_names_and_values_nats_cannot_carry_are_header_errors(bad: dict[str, list[str]]) -> None:
    with pytest.raises(HeaderError):
        header_block(bad)


@given(headers)
def test_read_header_block_inverts_header_block(sent: dict[str, list[str]]) -> None:
    block = header_block(sent)
    assert read_header_block(block) == ("", "", sent) if block else sent == {}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"NATS/1.0 503\r\n\r\n", ("503", "", {})),
        (b"NATS/1.0 100 Idle Heartbeat\r\n\r\n", ("100", "Idle Heartbeat", {})),
        (
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\n\r\n",
            ("408", "Request Timeout", {"Nats-Pending-Messages": ["5"]}),
        ),
        (
            b"NATS/1.0 409 Consumer Deleted\r\n\r\n",
            ("409", "Consumer Deleted", {}),
        ),
    ],
)
def test_read_header_block_status_messages(
    raw: bytes, expected: tuple[str, str, dict[str, list[str]]]
) -> None:
    assert read_header_block(raw) == expected


@pytest.mark.parametrize(
    ("sent", "extra"),
    [
        ({}, [("Nats-Msg-Id", "id\r\nNats-Expected-Stream: OTHER")]),
        ({}, [("Nats-Msg-Id", "id\nX: y")]),
        ({"X-A": ["a\x00b"]}, []),
        ({"X-A": ["fine"]}, [("Nats-Msg-Id", "lone\rcr")]),
        ({"X-A": ["\udcff"]}, []),
    ],
)
def test_no_control_character_or_undecodable_text_reaches_the_block(
    sent: dict[str, list[str]], extra: list[tuple[str, str]]
) -> None:
    """The last guard: also the connector's own (trusted-name) extras are checked."""
    with pytest.raises(HeaderError):
        header_block(sent, extra)
