"""Parsing received STOMP frames: the connector's parser agrees with stomp.py's on any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from stomp.utils import parse_frame as stomp_py_parse_frame  # type: ignore[import-untyped]

from connectors.stomp.message import encode_frame, parse_frame

# Frames made of the characters that matter to the grammar, and arbitrary bytes.
grammar = st.text("ab:\\crn\r\n é", max_size=40).map(lambda text: text.encode())
frames = grammar | st.binary(max_size=60) | st.builds(bytes.__add__, grammar, st.binary())


def _fields(raw: bytes) -> tuple[str, dict[str, str], bytes] | None:
    frame = parse_frame(raw)
    return None if frame is None else (frame.cmd, frame.headers, frame.body)


def _stomp_py_fields(raw: bytes) -> tuple[str, dict[str, str], bytes] | None:
    frame = stomp_py_parse_frame(raw)
    return None if frame is None else (frame.cmd, frame.headers, frame.body)


@given(frames)
def test_parses_like_stomp_py(raw: bytes) -> None:
    assert _fields(raw) == _stomp_py_fields(raw)


names_and_values = st.text(max_size=10).filter(lambda text: "\x00" not in text)


@given(
    st.lists(st.tuples(names_and_values.filter(bool), names_and_values), max_size=5),
    st.binary(max_size=40),
)
def test_reads_back_what_encode_frame_wrote(headers: list[tuple[str, str]], body: bytes) -> None:
    raw = encode_frame("MESSAGE", headers, body)[:-1]  # the NUL ends the frame on the wire
    frame = parse_frame(raw)
    assert frame is not None
    assert frame.cmd == "MESSAGE" and frame.body == body
    expected: dict[str, str] = {}
    for name, value in headers:
        expected.setdefault(name, value)
    assert frame.headers == expected


def test_a_typical_message_frame() -> None:
    raw = b"MESSAGE\r\ndestination:/queue/a\r\nx\\cy:1\\n2\r\nack:7\r\n\r\n\x00body\x00"
    frame = parse_frame(raw)
    assert frame is not None
    assert (frame.cmd, frame.headers, frame.body) == (
        "MESSAGE",
        {"destination": "/queue/a", "x:y": "1\n2", "ack": "7"},
        b"\x00body\x00",
    )
    assert parse_frame(b"\n\r\n") is None
