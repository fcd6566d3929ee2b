"""Header translations: AMQP properties and typed tables, Kafka, STOMP; NATS rules; payload."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.errors import ConfigError, HeaderError, PayloadTooLarge
from natsbridge.mappings import headers as h
from natsbridge.mappings import kafka, payload, stomp
from natsbridge.mappings.amqp_properties import (
    PROPERTY_HEADERS,
    headers_to_properties,
    properties_to_headers,
)

names = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "X-Id",
            "Amqp-Priority",
            "Amqp-Header-Types",
            "Kafka-Header-Order",
            "Stomp-Destination",
            "destination",
            "Bridge-Origin",
            "Bridge-Hops",
            "Bridge-Buffer-Key",
            "bridge-reason",
            "Nats-Msg-Id",
            "Nats-Rollup",
            "NATS-EXPECTED-STREAM",
            "%4Eats-Rollup",
            "%",
            "",
            "a:b",
            "$x",
        ]
    ),
)
texts = st.one_of(
    st.text(max_size=16),
    st.sampled_from(["", " lead", "trail ", "a\r\nb", "base64:AAAA", "x\x00", "né"]),
)


def assert_valid_nats(headers: dict[str, list[str]]) -> None:
    h.validate_headers(headers)


# --- NATS header rules ---------------------------------------------------------------


def test_header_validation() -> None:
    h.validate_headers({"X-Id": ["1", ""], "a.b_c~!": ["é ok"]})
    with pytest.raises(HeaderError, match="invalid character '/' at offset 1"):
        h.validate_header_name("a/b")
    with pytest.raises(HeaderError, match="invalid character ':' at offset 1"):
        h.validate_header_name("a:b")
    with pytest.raises(HeaderError, match="invalid character ' '"):
        h.validate_header_name("a b")
    with pytest.raises(HeaderError, match="empty header name"):
        h.validate_header_name("")
    with pytest.raises(HeaderError, match="cannot hold CR or LF"):
        h.validate_header_value("X", "a\nb")


def test_bridge_headers_are_valid_names() -> None:
    for name in (*h.BRIDGE_HEADERS, *PROPERTY_HEADERS.values()):
        h.validate_header_name(name)
    assert len(set(h.BRIDGE_HEADERS)) == len(h.BRIDGE_HEADERS)


@given(
    st.dictionaries(
        st.sampled_from(sorted(h.JETSTREAM_PUBLISH_DIRECTIVES)) | st.text(min_size=1),
        st.lists(st.text(), min_size=1, max_size=2),
    )
)
def test_publish_directives_are_dropped_and_nothing_else(headers: dict[str, list[str]]) -> None:
    kept = h.without_publish_directives(headers)
    assert set(headers) - set(kept) <= h.JETSTREAM_PUBLISH_DIRECTIVES
    assert h.JETSTREAM_PUBLISH_DIRECTIVES.isdisjoint(kept)
    assert all(kept[name] == headers[name] for name in kept)
    if h.JETSTREAM_PUBLISH_DIRECTIVES.isdisjoint(headers):
        assert kept is headers


def test_publish_directives_are_the_servers_storage_directives_only() -> None:
    for name in ("Nats-Msg-Id", "Nats-Stream", "Nats-Sequence", "Bridge-Origin", "X-Expected"):
        assert name not in h.JETSTREAM_PUBLISH_DIRECTIVES
    message = {"Nats-Msg-Id": ["m1"], "Nats-Expected-Last-Sequence": ["41"], "X": ["1"]}
    assert h.without_publish_directives(message) == {"Nats-Msg-Id": ["m1"], "X": ["1"]}


@given(st.text(max_size=12))
def test_header_name_escaping_round_trips(name: str) -> None:
    escaped = h.escape_header_name(name)
    h.validate_header_name(escaped)
    assert h.unescape_header_name(escaped) == name


@given(st.one_of(st.text(max_size=16), st.binary(max_size=16)))
def test_value_encoding_round_trips(value: str | bytes) -> None:
    encoded = h.encode_value(value)
    h.validate_header_value("X", encoded)
    assert encoded == encoded.strip()
    if isinstance(value, str):
        assert h.decode_text_value(encoded) == value
    else:
        assert h.decode_value(encoded) == value


def test_value_encoding_examples() -> None:
    assert h.encode_value("plain text é") == "plain text é"
    assert h.encode_value(b"\xff") == "base64:/w=="
    assert h.encode_value("base64:x") == "base64:YmFzZTY0Ong="
    assert h.encode_value("a\nb") == "base64:YQpi"
    with pytest.raises(HeaderError, match="malformed base64"):
        h.decode_value("base64:!!")


# --- AMQP ----------------------------------------------------------------------------

scalars = st.one_of(
    texts,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(),
    st.decimals(allow_nan=False),
    st.datetimes(
        timezones=st.one_of(
            st.none(),
            st.just(UTC),
            st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-720, 720)),
        )
    ),
    st.binary(max_size=8),
    st.none(),
)
field_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=6), inner, max_size=3),
    ),
    max_leaves=8,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also checks types, NaN and the datetime offset."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and repr(a) == repr(b))
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, datetime):
        return bool(a.isoformat() == b.isoformat())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


properties = st.fixed_dictionaries(
    {},
    optional={
        "content_type": texts,
        "content_encoding": texts,
        "delivery_mode": st.sampled_from([1, 2]),
        "priority": st.integers(0, 255),
        "correlation_id": texts,
        "reply_to": texts,
        "expiration": st.just("60000"),
        "message_id": texts,
        "timestamp": st.integers(0, 2**40),
        "type": texts,
        "user_id": texts,
        "app_id": texts,
    },
)


@given(properties, st.dictionaries(names, field_values, max_size=5))
def test_amqp_round_trip(props: dict[str, object], table: dict[str, Any]) -> None:
    headers = properties_to_headers(props, table)
    assert_valid_nats(headers)
    back_props, back_table = headers_to_properties(headers)
    assert back_props == props
    assert same(back_table, table), (table, headers, back_table)


def test_amqp_encoding_is_readable() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    headers = properties_to_headers(
        {"content_type": "application/json", "priority": 5, "delivery_mode": 2, "reply_to": None},
        {
            "x-retries": 3,
            "x-tenant": "acme",
            "ok": True,
            "at": when,
            "price": Decimal("1.20"),
            "raw": b"\x00\x01",
            "nested": {"a": [1, 2.5, None], "$k": b"x"},
            "Amqp-Priority": "app value",
        },
    )
    assert headers["Amqp-Content-Type"] == ["application/json"]
    assert headers["Amqp-Priority"] == ["5"]
    assert headers["x-retries"] == ["3"]
    assert headers["x-tenant"] == ["acme"]
    assert headers["at"] == ["2024-05-01T12:00:00+00:00"]
    assert headers["price"] == ["1.20"]
    assert headers["raw"] == ["base64:AAE="]
    assert headers["nested"] == ['{"a":[1,2.5,null],"$$k":{"$bytes":"eA=="}}']
    assert headers["%41mqp-Priority"] == ["app value"]
    assert "reply_to" not in headers and "Amqp-Reply-To" not in headers
    assert headers[h.AMQP_HEADER_TYPES] == [
        '{"x-retries":"int","ok":"bool","at":"datetime","price":"decimal","raw":"bytes",'
        '"nested":"table"}'
    ]


def test_nats_headers_become_table_entries() -> None:
    props, table = headers_to_properties(
        {"Amqp-Delivery-Mode": ["2"], "X-Multi": ["a", "b"], "Bridge-Origin": ["dc1"]}
    )
    assert props == {"delivery_mode": 2}
    assert table == {"X-Multi": ["a", "b"], "Bridge-Origin": "dc1"}


@pytest.mark.parametrize(
    ("props", "table", "fragment"),
    [
        ({"headers": {}}, None, "pass the header table as `table`"),
        ({"colour": "red"}, None, "unknown AMQP basic property 'colour'"),
        ({"priority": "5"}, None, "must be an int"),
        ({"app_id": 5}, None, "must be a str"),
        ({}, {"x": object()}, "type object is not supported"),
    ],
)
def test_amqp_encoding_errors(props: dict[str, object], table: Any, fragment: str) -> None:
    with pytest.raises(HeaderError, match=fragment):
        properties_to_headers(props, table)


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({h.AMQP_HEADER_TYPES: ["{"]}, "is not JSON"),
        ({h.AMQP_HEADER_TYPES: ['{"x":"int"}'], "x": ["one"]}, "not a valid int"),
        ({h.AMQP_HEADER_TYPES: ['{"x":"blob"}'], "x": ["1"]}, "unknown type code 'blob'"),
        ({h.AMQP_HEADER_TYPES: ['{"x":"table"}'], "x": ['{"$zz":"1"}']}, "not a valid table"),
        ({"Amqp-Priority": ["high"]}, "not an integer"),
    ],
)
def test_amqp_decoding_errors(headers: dict[str, list[str]], fragment: str) -> None:
    with pytest.raises(HeaderError, match=fragment):
        headers_to_properties(headers)


# --- foreign header names ---------------------------------------------------------------

reserved_names = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["Nats-", "nats-", "NATS-", "Bridge-", "bridge-", "BRIDGE-"]),
    st.one_of(st.sampled_from(sorted(h.JETSTREAM_PUBLISH_DIRECTIVES)), st.text(max_size=8)),
)
foreign_names = st.one_of(names, reserved_names)


def acts_on_nats(name: str) -> bool:
    """Whether NATS or the bridge would read `name` as one of their own."""
    return name.lower().startswith(h.RESERVED_PREFIXES) and name not in h.LOOP_HEADERS


@given(foreign_names)
def test_foreign_names_round_trip_and_never_act(name: str) -> None:
    nats_name = h.foreign_header_name(name)
    h.validate_header_name(nats_name)
    assert h.unescape_header_name(nats_name) == name
    assert not acts_on_nats(nats_name)
    assert nats_name not in h.JETSTREAM_PUBLISH_DIRECTIVES and nats_name != h.NATS_MSG_ID


@given(st.lists(st.tuples(foreign_names, st.binary(max_size=4)), max_size=6))
def test_kafka_reserved_headers_are_renamed_and_come_back(
    record_headers: list[tuple[str, bytes]],
) -> None:
    headers = kafka.kafka_to_nats_headers(record_headers)
    assert not any(acts_on_nats(name) for name in headers)
    assert kafka.nats_to_kafka_headers(headers) == record_headers


@given(st.dictionaries(foreign_names, st.text(max_size=6), max_size=6))
def test_amqp_and_stomp_reserved_headers_are_renamed_and_come_back(table: dict[str, str]) -> None:
    amqp_headers = properties_to_headers({}, table)
    assert not any(acts_on_nats(name) for name in amqp_headers)
    assert headers_to_properties(amqp_headers)[1] == table
    frame = {name: value for name, value in table.items() if name not in stomp.DROPPED_HEADERS}
    stomp_headers = stomp.stomp_to_nats_headers(frame)
    assert not any(acts_on_nats(name) for name in stomp_headers)
    assert stomp.nats_to_stomp_headers(stomp_headers) == frame


def test_foreign_name_examples() -> None:
    assert h.foreign_header_name("Nats-Rollup") == "%4Eats-Rollup"
    assert h.foreign_header_name("nats-msg-id") == "%6Eats-msg-id"
    assert h.foreign_header_name("Bridge-Buffer-Key") == "%42ridge-Buffer-Key"
    assert h.foreign_header_name("Bridge-Origin") == "Bridge-Origin"
    assert h.foreign_header_name("Bridge-Hops") == "Bridge-Hops"
    assert h.foreign_header_name("X-Id") == "X-Id"
    assert h.foreign_header_name("kafka-header-order", frozenset({"kafka-header-order"})) == (
        "%6Bafka-header-order"
    )


def test_amqp_keys_and_shortstrs_that_are_not_utf8_are_carried() -> None:
    """pika hands a table key or shortstr property that is not UTF-8 over as bytes."""
    headers = properties_to_headers({"message_id": b"\xffid"}, {b"\xffkey": "v", "t": {b"\xfe": 1}})
    assert headers["%ED%B3%BFkey"] == ["v"]
    assert headers["Amqp-Message-Id"] == ["base64:/2lk"]
    props, table = headers_to_properties(headers)
    assert props == {"message_id": b"\xffid"}  # pika writes the same bytes again
    assert table[b"\xffkey"] == "v"  # pika writes the same bytes again
    assert table["t"] == {"\udcfe": 1}


# --- Kafka ---------------------------------------------------------------------------


@given(st.lists(st.tuples(names, st.binary(max_size=8)), max_size=8))
def test_kafka_headers_round_trip(record_headers: list[tuple[str, bytes]]) -> None:
    headers = kafka.kafka_to_nats_headers(record_headers)
    assert_valid_nats(headers)
    assert kafka.nats_to_kafka_headers(headers) == record_headers


def test_kafka_order_header_only_when_interleaved() -> None:
    grouped = kafka.kafka_to_nats_headers([("a", b"1"), ("a", b"2"), ("b", b"\xff")])
    assert grouped == {"a": ["1", "2"], "b": ["base64:/w=="]}
    mixed = kafka.kafka_to_nats_headers([("a", b"1"), ("b", b"2"), ("a", b"3")])
    assert mixed[h.KAFKA_HEADER_ORDER] == ['["a","b","a"]']
    assert kafka.nats_to_kafka_headers(mixed) == [("a", b"1"), ("b", b"2"), ("a", b"3")]


def test_kafka_inconsistent_order_header_is_ignored() -> None:
    headers = {"a": ["1"], h.KAFKA_HEADER_ORDER: ['["a","a"]']}
    assert kafka.nats_to_kafka_headers(headers) == [("a", b"1")]


@given(st.one_of(st.none(), st.binary(max_size=10)))
def test_kafka_coordinates(key: bytes | None) -> None:
    headers = kafka.coordinate_headers("clicks", 3, 42, key)
    assert_valid_nats(headers)
    assert headers[h.KAFKA_PARTITION] == ["3"] and headers[h.KAFKA_OFFSET] == ["42"]
    assert kafka.key_from_headers(headers) == key


def test_kafka_key_marker() -> None:
    assert kafka.coordinate_headers("t", 0, 0, b"dev42")[h.KAFKA_KEY] == ["dev42"]
    assert kafka.coordinate_headers("t", 0, 0, b"\x80")[h.KAFKA_KEY] == ["base64:gA=="]


# --- STOMP ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("a:b", "a\\cb"), ("l1\nl2", "l1\\nl2"), ("c\\d", "c\\\\d"), ("x\ry", "x\\ry"), ("ok", "ok")],
)
def test_stomp_escaping(raw: str, escaped: str) -> None:
    assert stomp.escape_header(raw) == escaped
    assert stomp.unescape_header(escaped) == raw


@given(st.text(st.characters(exclude_characters="\x00"), max_size=20))
def test_stomp_escaping_round_trips(text: str) -> None:
    escaped = stomp.escape_header(text)  # a NUL is refused (tests/connectors/test_stomp.py)
    assert "\n" not in escaped and "\r" not in escaped and ":" not in escaped
    assert stomp.unescape_header(escaped) == text


@pytest.mark.parametrize("bad", ["a\\t", "trailing\\"])
def test_stomp_undefined_escape(bad: str) -> None:
    with pytest.raises(HeaderError, match="undefined STOMP escape"):
        stomp.unescape_header(bad)


app_names = names.filter(lambda n: n not in stomp.DROPPED_HEADERS)


@given(st.dictionaries(app_names, texts, max_size=6))
def test_stomp_headers_round_trip(frame_headers: dict[str, str]) -> None:
    headers = stomp.stomp_to_nats_headers(frame_headers)
    assert_valid_nats(headers)
    assert stomp.nats_to_stomp_headers(headers) == frame_headers


def test_stomp_header_mapping() -> None:
    headers = stomp.stomp_to_nats_headers(
        {
            "destination": "/topic/a",
            "message-id": "m1",
            "subscription": "0",
            "ack": "a1",
            "content-length": "3",
            "content-type": "text/plain",
            "priority": "4",
            "Stomp-Destination": "app",
        }
    )
    assert headers == {
        "Stomp-Destination": ["/topic/a"],
        "Stomp-Message-Id": ["m1"],
        "Stomp-Content-Type": ["text/plain"],
        "priority": ["4"],
        "%53tomp-Destination": ["app"],
    }
    assert stomp.nats_to_stomp_headers({"X": ["first", "second"]}) == {"X": "first"}


# --- payload -------------------------------------------------------------------------


def test_payload_rules() -> None:
    assert payload.DEFAULT_MAX_PAYLOAD_BYTES == 1024 * 1024
    payload.check_payload(payload.DEFAULT_MAX_PAYLOAD_BYTES, payload.DEFAULT_MAX_PAYLOAD_BYTES)
    with pytest.raises(PayloadTooLarge) as info:
        payload.check_payload(2_000_000, payload.DEFAULT_MAX_PAYLOAD_BYTES)
    assert info.value.size == 2_000_000 and info.value.limit == 1024 * 1024
    assert payload.validate_payload_limit(8 * 1024 * 1024) is None
    warning = payload.validate_payload_limit(9 * 1024 * 1024)
    assert warning is not None and "recommended 8 MiB" in warning
    for bad in (0, -1, 64 * 1024 * 1024 + 1):
        with pytest.raises(ConfigError):
            payload.validate_payload_limit(bad)
    assert payload.effective_limit(None, None) == 1024 * 1024
    assert payload.effective_limit(8 * 1024 * 1024, 1024 * 1024) == 1024 * 1024
    assert payload.effective_limit(None, 4 * 1024 * 1024) == 1024 * 1024
