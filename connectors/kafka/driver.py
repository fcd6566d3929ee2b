"""The version guard of the Kafka connector's driver, confluent-kafka (librdkafka bundled).

The connector uses confluent-kafka's public API; librdkafka's configuration properties,
error codes and callback behaviour (rebalance callbacks served inside `consume()`,
delivery reports inside `poll()`, transactions) were tested with the range `TESTED`, and
so was the one workaround here: `record_headers`, around a crash in `Message.headers()`.
Importing this module checks the installed confluent-kafka against it and raises
DriverVersionError naming both otherwise (tests/connectors/test_drivers.py).
"""

from __future__ import annotations

import gc
from typing import Any

from natsbridge.bridge.drivers import require
from natsbridge.bridge.errors import HeaderError

DISTRIBUTION = "confluent-kafka"
TESTED = ((2, 6), (3, 0))
"""confluent-kafka >=2.6,<3.0 (pyproject.toml pins the same range)."""

VERSION = require(DISTRIBUTION, *TESTED)


class UnreadableHeaderName(HeaderError):
    """A record's header name is not UTF-8, and confluent-kafka cannot hand it over."""


def record_headers(message: Any) -> list[tuple[str, bytes | None]] | None:
    """`message.headers()`, or UnreadableHeaderName instead of a crash.

    confluent-kafka (tested range) builds each header as a (name, value) tuple with
    ``PyUnicode_FromString(name)``; for a name that is not UTF-8 that is NULL, and the
    tuple keeps a NULL slot. Depending on the call path Python then raises SystemError
    ("returned a result with an exception set") or hands back the list, and touching the
    name segfaults the process: one record from any producer (librdkafka writes any
    bytes) killed the bridge. `gc.get_referents` walks a tuple without touching a NULL
    slot, so a tuple with fewer than two referents is that case (and the decoding error
    left pending surfaces there as SystemError). `Message.headers()` caches its list, so
    this is the only call for a message.
    """
    try:
        headers = message.headers()
        whole = not headers or all(len(gc.get_referents(pair)) == 2 for pair in headers)
    except SystemError:  # the decoding error left pending, raised by the next builtin
        whole = False
    if not whole:
        raise UnreadableHeaderName(_UNREADABLE)
    return headers  # type: ignore[no-any-return]


_UNREADABLE = (
    "kafka: a header name of the record is not UTF-8 text, which Kafka header names are; "
    "the record cannot be read"
)
