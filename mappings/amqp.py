"""AMQP 0-9-1 addresses: routing keys and topic binding keys, to NATS and back.

Routing key ↔ subject
    `routing_key_to_subject` escapes the key word by word with mappings.escaping: the
    dots of the key stay token separators, every word that is already a NATS token is
    kept (``eu.created`` → ``eu.created``), and the rest is percent-escaped: ``a b`` →
    ``a%20b``, ``a..b`` → ``a.%.b``, ``.a`` → ``%.a``, ``""`` → ``%``, ``*`` → ``%2A``,
    ``100%`` → ``100%25``, ``café`` → ``caf%C3%A9``. `subject_to_routing_key` inverts it
    exactly and refuses subjects the escaping cannot produce.

Binding key → NATS patterns
    `binding_key_to_patterns` turns a topic-exchange binding key into the NATS patterns
    that select the same escaped subjects: ``*`` stays ``*`` (one word, possibly
    empty — its escaped token ``%`` is still one token), other words are escaped as
    above, and ``#`` becomes ``>``. AMQP's ``#`` matches *zero* or more words while NATS's
    ``>`` needs one or more, so ``a.#`` gives two patterns, ``a`` and ``a.>``. A lone
    ``#`` gives ``>`` alone: every routing key, even the empty one, maps to at least one
    token. ``#`` anywhere but the end has no NATS equivalent and raises SubjectError.

Matching
    `topic_match` matches a routing key against a binding key with RabbitMQ's own topic
    rules (``#`` anywhere, zero or more words) and returns the words captured by each
    ``*``. Templates use it for ``{{wildcard(n)}}`` from an AMQP source. A ``*`` or ``#``
    inside a longer word is literal, as in RabbitMQ.
"""

from __future__ import annotations

from natsbridge.bridge.errors import MappingError, SubjectError
from natsbridge.mappings.escaping import escape_token, escape_words, unescape_words

MAX_ROUTING_KEY_BYTES = 255
"""AMQP shortstr limit on routing keys and binding keys."""


def validate_routing_key(routing_key: str) -> None:
    """Raise MappingError if `routing_key` is over 255 UTF-8 bytes (an AMQP shortstr)."""
    size = len(routing_key.encode("utf-8", "surrogatepass"))
    if size > MAX_ROUTING_KEY_BYTES:
        raise MappingError(
            f"routing key of {size} bytes is over AMQP's {MAX_ROUTING_KEY_BYTES}-byte limit"
        )


def routing_key_to_subject(routing_key: str) -> str:
    """The NATS subject (tokens) for `routing_key`; reversible and injective."""
    return escape_words(routing_key)


def subject_to_routing_key(subject: str) -> str:
    """The routing key that `routing_key_to_subject` turned into `subject`."""
    return unescape_words(subject)


def binding_key_to_patterns(binding_key: str) -> tuple[str, ...]:
    """NATS patterns matching the subjects of the routing keys `binding_key` selects."""
    words = binding_key.split(".")
    for position, word in enumerate(words[:-1], start=1):
        if word == "#":
            raise SubjectError(
                f"'#' at position {position} in binding key {binding_key!r} has no NATS "
                "equivalent: NATS's '>' only matches at the end of a pattern"
            )
    tokens = [word if word == "*" else escape_token(word) for word in words[:-1]]
    if words[-1] != "#":
        last = "*" if words[-1] == "*" else escape_token(words[-1])
        return (".".join([*tokens, last]),)
    if not tokens:
        return (">",)
    return (".".join(tokens), ".".join([*tokens, ">"]))


def count_stars(binding_key: str) -> int:
    """How many ``*`` words `binding_key` holds."""
    return binding_key.split(".").count("*")


def topic_match(binding_key: str, routing_key: str) -> tuple[str, ...] | None:
    """The words matched by each ``*`` of `binding_key`, or None if `routing_key` misses."""
    pattern = binding_key.split(".")
    words = routing_key.split(".")
    if "#" not in pattern:
        if len(pattern) != len(words):
            return None
        captures: list[str] = []
        for p, w in zip(pattern, words, strict=True):
            if p == "*":
                captures.append(w)
            elif p != w:
                return None
        return tuple(captures)
    return _match_hash(pattern, 0, words, 0, ())


def _match_hash(
    pattern: list[str], i: int, words: list[str], j: int, captures: tuple[str, ...]
) -> tuple[str, ...] | None:
    # Backtracking over '#': routing keys are at most 255 bytes, so this stays small.
    while i < len(pattern):
        p = pattern[i]
        if p == "#":
            # Collapse runs of '#', then try every split point, shortest first.
            while i + 1 < len(pattern) and pattern[i + 1] == "#":
                i += 1
            if i + 1 == len(pattern):
                return captures
            for k in range(j, len(words) + 1):
                found = _match_hash(pattern, i + 1, words, k, captures)
                if found is not None:
                    return found
            return None
        if j >= len(words):
            return None
        if p == "*":
            captures = (*captures, words[j])
        elif p != words[j]:
            return None
        i += 1
        j += 1
    return captures if j == len(words) else None
