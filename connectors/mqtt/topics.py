"""MQTT topic names and filters: checked, matched, and mapped to NATS subjects reversibly.

Rules (MQTT 3.1.1 and 5, as Mosquitto enforces them)
    A topic name (what a PUBLISH carries) is 1 to 65535 bytes of UTF-8; its levels are
    separated by ``/`` and may be empty (``a//b``, ``/a``). A topic filter (what a
    SUBSCRIBE asks for) may also hold ``+`` (exactly one level) and ``#`` (every level
    that follows, and the parent itself: ``a/#`` matches ``a``), each alone in its level,
    ``#`` only last. Neither may hold U+0000, other control characters (C0, DEL, C1) or
    Unicode noncharacters: Mosquitto drops the connection of a client that sends one
    ("malformed packet"), so `check_text` refuses them before they are sent. Filters
    starting with ``+`` or ``#`` do not match topics starting with ``$`` (``$SYS``).

Subjects
    `topic_to_subject` makes each level one NATS token (mappings.escaping.escape_token:
    ``.`` → ``%2E``, an empty level → ``%``, a level that is ``*`` or ``>`` → ``%2A`` /
    ``%3E``) and joins them with ``.``: ``sensors/press-7/temp`` → ``sensors.press-7.temp``,
    ``v1.2/x`` → ``v1%2E2.x``. Two topics never give the same subject, every subject is
    valid, and `subject_to_topic` gives the topic back. `filter_to_patterns` gives the
    NATS patterns of the subjects of the topics a filter matches (``+`` → ``*``,
    ``#`` → ``>``; ``a/#`` → ``a`` and ``a.>``).
"""

from __future__ import annotations

import re

from natsbridge.mappings.escaping import escape_token, unescape_token
from natsbridge.sdk import MappingError

MAX_TOPIC_BYTES = 65535
"""MQTT's limit on a topic name or filter, in bytes of UTF-8."""

# Control characters, surrogates and noncharacters: what Mosquitto calls malformed UTF-8.
_NONCHARACTERS = "".join(
    re.escape(chr(plane + low)) for plane in range(0, 0x110000, 0x10000) for low in (0xFFFE, 0xFFFF)
)
_BAD_CHAR = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff\\ufdd0-\\ufdef{_NONCHARACTERS}]")


def check_text(what: str, text: str) -> None:
    """Raise MappingError if `text` holds a character an MQTT string cannot carry."""
    bad = _BAD_CHAR.search(text)
    if bad is not None:
        raise MappingError(
            f"{what} {text!r} holds {bad.group()!r} at offset {bad.start()}: MQTT strings "
            "cannot carry control characters, surrogates or noncharacters"
        )


def _check_length(what: str, text: str) -> None:
    if not text:
        raise MappingError(f"an MQTT {what} cannot be empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TOPIC_BYTES:
        raise MappingError(f"MQTT {what} of {size} bytes is over the {MAX_TOPIC_BYTES} limit")


def validate_topic(topic: str) -> None:
    """Raise MappingError unless `topic` is a topic name a PUBLISH can carry."""
    _check_length("topic", topic)
    check_text("MQTT topic", topic)
    if "+" in topic or "#" in topic:
        raise MappingError(f"MQTT topic {topic!r} holds a wildcard ('+' or '#'): not a topic name")


def validate_filter(topic_filter: str) -> None:
    """Raise MappingError unless `topic_filter` is a valid MQTT topic filter."""
    _check_length("topic filter", topic_filter)
    check_text("MQTT topic filter", topic_filter)
    levels = topic_filter.split("/")
    for position, level in enumerate(levels, start=1):
        if level in ("+", "#"):
            if level == "#" and position != len(levels):
                raise MappingError(f"'#' in topic filter {topic_filter!r} must be the last level")
        elif "+" in level or "#" in level:
            raise MappingError(
                f"level {level!r} of topic filter {topic_filter!r}: '+' and '#' must be a "
                "whole level"
            )


def count_plus(topic_filter: str) -> int:
    """How many ``+`` levels `topic_filter` has (the ``{{wildcard(n)}}`` it offers)."""
    return topic_filter.split("/").count("+")


def match(topic_filter: str, topic: str) -> tuple[str, ...] | None:
    """The level matched by each ``+`` of `topic_filter`, or None if `topic` does not match."""
    pattern = topic_filter.split("/")
    levels = topic.split("/")
    if topic.startswith("$") and pattern[0] in ("+", "#"):
        return None
    if pattern[-1] == "#":
        pattern.pop()
        if len(levels) < len(pattern):
            return None
        levels = levels[: len(pattern)]
    elif len(levels) != len(pattern):
        return None
    captures: list[str] = []
    for want, level in zip(pattern, levels, strict=True):
        if want == "+":
            captures.append(level)
        elif want != level:
            return None
    return tuple(captures)


def topic_to_subject(topic: str) -> str:
    """The NATS subject of `topic`: one escaped token per level (module doc)."""
    return ".".join([escape_token(level) for level in topic.split("/")])


def subject_to_topic(subject: str) -> str:
    """The topic `topic_to_subject` turned into `subject`; MappingError for any other."""
    return "/".join([unescape_token(token) for token in subject.split(".")])


def filter_to_patterns(topic_filter: str) -> tuple[str, ...]:
    """NATS patterns matching the subjects of the topics `topic_filter` matches."""
    levels = topic_filter.split("/")
    tokens = ["*" if level == "+" else escape_token(level) for level in levels]
    if levels[-1] != "#":
        return (".".join(tokens),)
    if len(tokens) == 1:
        return (">",)
    parent = ".".join(tokens[:-1])
    return (parent, f"{parent}.>")
