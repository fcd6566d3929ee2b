"""parse_ack_subject: the JetStream ack subject read without nats-py's Msg.metadata (no broker)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.connector import AckOnce
from natsbridge.bridge.errors import MappingError
from natsbridge.connectors.nats.kind import NatsOrigin as Origin
from natsbridge.connectors.nats.source import AckSubject, _js_incoming, _Pulled, parse_ack_subject

# Stream, consumer, domain and account names: one subject token (no '.', no whitespace).
names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1
)
counts = st.integers(min_value=0, max_value=2**64 - 1)


def build(ack: AckSubject, domain: str | None = None, account: str = "", token: str = "") -> str:
    """The ack subject a server would send: the old form without `domain`, else the newer one."""
    fields = [
        ack.stream,
        ack.consumer,
        *map(str, ack[2:]),
    ]
    if domain is None:
        return ".".join(["$JS", "ACK", *fields])
    return ".".join(["$JS", "ACK", domain, account, *fields, *([token] if token else [])])


acks = st.builds(AckSubject, names, names, counts, counts, counts, counts, counts)


@given(ack=acks)
def test_old_form_round_trips(ack: AckSubject) -> None:
    assert parse_ack_subject(build(ack)) == ack


@given(ack=acks, domain=names, account=names, token=st.one_of(st.just(""), names))
def test_new_form_round_trips_with_or_without_the_final_token(
    ack: AckSubject, domain: str, account: str, token: str
) -> None:
    assert parse_ack_subject(build(ack, domain, account, token)) == ack


def test_old_form_example() -> None:
    ack = parse_ack_subject("$JS.ACK.ORDERS.natsbridge-r1.3.1042.977.1718000000123456789.12")
    assert ack == AckSubject("ORDERS", "natsbridge-r1", 3, 1042, 977, 1718000000123456789, 12)


def test_new_form_example() -> None:
    reply = "$JS.ACK._.ACCHASH.ORDERS.natsbridge-r1.1.7.7.1718000000000000000.0.8hSVNIRiKqMDS1Lkc"
    ack = parse_ack_subject(reply)
    assert (ack.stream, ack.consumer, ack.delivered, ack.stream_seq) == (
        "ORDERS",
        "natsbridge-r1",
        1,
        7,
    )
    assert (ack.consumer_seq, ack.timestamp_ns, ack.pending) == (7, 1718000000000000000, 0)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "_INBOX.abc",
        "$JS.ACK.S.C.1.2.3.4",  # 8 tokens
        "$JS.ACK.d.h.S.C.1.2.3.4",  # 10 tokens
        "$JS.NAK.S.C.1.2.3.4.5",
        "$JS.ACK.S.C.one.2.3.4.5",
    ],
)
def test_rejects_what_is_not_an_ack_subject(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_ack_subject(reply)


def test_a_pulled_message_that_cannot_be_read_is_handed_over_with_its_error() -> None:
    """Never raised out of receive() (that would stop the route): the runtime dead-letters it."""
    pulled = _Pulled("orders.eu", "not.an.ack.subject", b"payload", {})
    incoming = _js_incoming(pulled, "nats", AckOnce(lambda error: None))
    assert isinstance(incoming.error, MappingError)
    assert incoming.envelope.payload == b"payload"
    assert incoming.envelope.origin == Origin("nats", "nats", subject="orders.eu")
