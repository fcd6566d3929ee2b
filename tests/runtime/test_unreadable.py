"""`unreadable`: the one rule by which every source hands over a message it could not convert."""

from __future__ import annotations

from natsbridge.bridge.connector import unreadable
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import HeaderError, MappingError


def test_a_permanent_error_is_kept_and_anything_else_becomes_a_mapping_error() -> None:
    settled: list[BaseException | None] = []
    envelope = Envelope("q", b"payload")

    refused = HeaderError("table key")
    kept = unreadable(envelope, settled.append, refused, "amqp")
    assert kept.error is refused and kept.envelope is envelope

    surprise = unreadable(envelope, settled.append, KeyError("x"), "kafka")
    assert isinstance(surprise.error, MappingError)
    assert str(surprise.error) == "kafka: cannot read the message: KeyError: 'x'"
    surprise.ack(None)
    assert settled == [None]  # the source's own ack travels with it
