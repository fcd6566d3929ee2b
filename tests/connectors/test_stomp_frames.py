"""Parsing received STOMP frames: the connector's parser agrees with stomp.py's on any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from stomp.utils import parse_frame as stomp_py_parse_frame  # type: ignore[import-untyped]

from natsbridge.connectors.stomp.message import FrameSplitter, encode_frame, parse_frame

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


frame_contents = st.tuples(
    st.lists(st.tuples(names_and_values.filter(bool), names_and_values), max_size=3),
    st.binary(max_size=30),
    st.booleans(),
)


def _wire(headers: list[tuple[str, str]], body: bytes, with_length: bool) -> bytes:
    """A frame as a broker writes it: content-length optional when the body has no NUL."""
    headers = [(name, value) for name, value in headers if name != "content-length"]
    if with_length or b"\x00" in body:
        headers.insert(0, ("content-length", str(len(body))))
    return encode_frame("MESSAGE", headers, body)


@given(
    st.lists(frame_contents, max_size=6),
    st.lists(st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]), min_size=6, max_size=6),
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8),
)
def test_splitter_cuts_frames_from_any_chunking(
    contents: list[tuple[list[tuple[str, str]], bytes, bool]],
    eols: list[bytes],
    chunk_sizes: list[int],
) -> None:
    wire = [_wire(*content) for content in contents]
    stream = b"".join(frame + eol for frame, eol in zip(wire, eols, strict=False))
    splitter = FrameSplitter()
    frames: list[bytes] = []
    at = 0
    index = 0
    while at < len(stream):
        size = chunk_sizes[index % len(chunk_sizes)]
        frames.extend(splitter.feed(stream[at : at + size]))
        at, index = at + size, index + 1
    assert frames == [frame[:-1] for frame in wire]
    for frame, (_, body, _) in zip(frames, contents, strict=True):
        parsed = parse_frame(frame)
        assert parsed is not None and parsed.body == body


def test_splitter_reads_content_length_only_from_the_headers() -> None:
    splitter = FrameSplitter()
    frames = splitter.feed(b"MESSAGE\na:1\n\nbody\ncontent-length:99\x00\nRECEIPT\n\n\x00")
    assert frames == [b"MESSAGE\na:1\n\nbody\ncontent-length:99", b"RECEIPT\n\n"]
    assert splitter.feed(b"MESSAGE\ncontent-length:3\n\n\x00\x00") == []
    assert splitter.feed(b"\x00\x00") == [b"MESSAGE\ncontent-length:3\n\n\x00\x00\x00"]
    # A content-length that is not a number is ignored, as stomp.py does: the NUL ends it.
    assert splitter.feed(b"MESSAGE\ncontent-length:x1\n\nab\x00") == [
        b"MESSAGE\ncontent-length:x1\n\nab"
    ]


def test_splitter_takes_a_large_frame_in_many_reads() -> None:
    # Re-joining everything held on each read would copy ~8 GiB here, and scan as much.
    body = b"\x00" * (8 * 2**20)
    wire = encode_frame("MESSAGE", [("content-length", str(len(body)))], body)
    splitter = FrameSplitter()
    frames: list[bytes] = []
    for start in range(0, len(wire), 4096):
        frames.extend(splitter.feed(wire[start : start + 4096]))
    assert frames == [wire[:-1]]
