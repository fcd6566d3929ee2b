"""The hostile suite's accounting, without brokers: each rule can pass and can fail."""

from __future__ import annotations

from tests.e2e.hostile import TAIL, Case, messages
from tests.e2e.hostile_readers import account_of, hid_of

CASES = [
    Case("ordinary"),
    Case("duplicate-message_id"),
    Case("duplicate-message_id"),
    Case("too-big", must_dead_letter="PayloadTooLarge"),
]


def test_everything_delivered_or_dead_lettered_is_clean() -> None:
    batch, tail = messages("amqp>nats", CASES), messages("amqp>nats", [TAIL], first=4)
    delivered = [m.hid for m in batch[:3] + tail]
    dead = {batch[3].hid: "PayloadTooLarge: payload of 102400 bytes exceeds 65536"}
    assert account_of("r", batch, tail, {}, delivered, dead, resends=0).problems() == []


def test_a_collapsed_duplicate_is_lost_and_named_by_kind() -> None:
    batch, tail = messages("amqp>nats", CASES), messages("amqp>nats", [TAIL], first=4)
    delivered = [batch[0].hid, batch[1].hid, tail[0].hid]
    dead = {batch[3].hid: "PayloadTooLarge: too large"}
    [problem] = account_of("r", batch, tail, {}, delivered, dead, resends=0).problems()
    assert problem == "LOST 1: duplicate-message_id #002"


def test_a_stuck_route_loses_its_tail() -> None:
    batch, tail = messages("kafka>stomp", CASES), messages("kafka>stomp", [TAIL], first=4)
    dead = {batch[3].hid: "PayloadTooLarge: too large"}
    problems = account_of("r", batch, tail, {}, [m.hid for m in batch[:3]], dead, 0).problems()
    assert problems == ["FLOW STOPPED: 1 of 1 tail ids lost"]


def test_duplicates_need_a_reconnect_and_dead_letters_a_reason() -> None:
    batch, tail = messages("nats>amqp", CASES), messages("nats>amqp", [TAIL], first=4)
    delivered = [m.hid for m in batch[:3] + tail] + [batch[0].hid]
    dead = {batch[3].hid: ""}
    problems = account_of("r", batch, tail, {}, delivered, dead, resends=0).problems()
    assert problems == [
        "DUPLICATED with no reconnect or redelivery: ordinary #000",
        "dead-lettered WITHOUT a Bridge-Reason: too-big #003",
        "nats>amqp.003 (too-big) should be dead-lettered PayloadTooLarge: dead-lettered as ''",
    ]
    assert len(account_of("r", batch, tail, {}, delivered, dead, resends=1).problems()) == 2


def test_refused_at_the_source_is_not_counted() -> None:
    batch, tail = messages("stomp>nats", CASES[:1]), messages("stomp>nats", [TAIL], first=1)
    refused = {batch[0].hid: "ERROR: refused"}
    account = account_of("r", batch, tail, refused, [tail[0].hid], {}, resends=0)
    assert account.problems() == []
    assert set(account.sent) == {tail[0].hid}


def test_ids_come_from_the_payload_else_the_header() -> None:
    [message] = messages("kafka>amqp", [Case("x")])
    assert hid_of(message.payload(), {}) == "kafka>amqp.000"
    assert hid_of(b"", [(b"X-Hid", b"kafka>amqp.007")]) == "kafka>amqp.007"
    assert hid_of(b"", {"X-Hid": "base64:" + "a2Fma2E+YW1xcC4wMDg="}) == "kafka>amqp.008"
    assert hid_of(b"no id", {}) == "?"
