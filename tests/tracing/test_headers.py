"""W3C trace headers through every protocol's header form: what a sink writes, the next
source reads back unchanged (AMQP headers, Kafka headers, STOMP headers, NATS headers,
MQTT 5 user properties)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import MQTTMessage

from natsbridge.bridge.envelope import Envelope, Headers
from natsbridge.bridge.tracing import TRACEPARENT, TRACESTATE
from natsbridge.connectors.mqtt.message import EnvelopeReader, publish_properties
from natsbridge.connectors.nats.message import header_block, read_header_block
from natsbridge.mappings import kafka, stomp
from natsbridge.mappings.amqp_properties import headers_to_properties, properties_to_headers

traceparents = st.builds(
    lambda trace, span, flags: f"00-{trace}-{span}-{flags:02x}",
    st.text("0123456789abcdef", min_size=32, max_size=32),
    st.text("0123456789abcdef", min_size=16, max_size=16),
    st.integers(0, 255),
)
# tracestate: up to 32 comma-separated `key=value` members (W3C trace-context, section 3.3)
KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
VALUE_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ",=")
members = st.builds(
    "{}{}={}".format,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
    st.text(KEY_CHARS, max_size=20),
    st.text(VALUE_CHARS, min_size=1, max_size=30),
)
tracestates = st.lists(members, max_size=5).map(",".join)


def _nats(headers: Headers) -> Headers:
    block = header_block(headers)
    assert block is not None
    return read_header_block(bytes(block))[2]


def _amqp(headers: Headers) -> Headers:
    properties, table = headers_to_properties(headers)
    return properties_to_headers(properties, {str(k): v for k, v in table.items()})


def _kafka(headers: Headers) -> Headers:
    return kafka.kafka_to_nats_headers(kafka.nats_to_kafka_headers(headers))


def _stomp(headers: Headers) -> Headers:
    _, sent = stomp.send_headers(headers, "activemq")
    return stomp.stomp_to_nats_headers(sent)


def _mqtt(headers: Headers) -> Headers:
    message = MQTTMessage(topic=b"t")
    message.properties = publish_properties(Envelope("t", b"", headers))
    return EnvelopeReader("mqtt").envelope(message).headers


@pytest.mark.parametrize("carry", [_nats, _amqp, _kafka, _stomp, _mqtt])
@given(traceparent=traceparents, tracestate=tracestates)
def test_trace_headers_cross_every_protocol(
    carry: object, traceparent: str, tracestate: str
) -> None:
    headers: Headers = {TRACEPARENT: [traceparent], "X-Id": ["1"]}
    if tracestate:
        headers[TRACESTATE] = [tracestate]
    assert callable(carry)
    back = carry(headers)
    assert back[TRACEPARENT] == [traceparent]
    assert back.get(TRACESTATE) == ([tracestate] if tracestate else None)
