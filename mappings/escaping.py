"""Reversible escaping of foreign names into NATS subject tokens.

One rule serves AMQP routing keys, Kafka topics and keys, STOMP destination names and
header values placed in subjects:

* A *word* (the text between two ``.`` of a routing key, say) becomes one token.
* A word made only of printable ASCII other than ``.`` and ``%`` is kept unchanged,
  unless it is exactly ``*`` or ``>`` (a wildcard token). So every ordinary NATS token,
  like ``eu``, ``created`` or ``a*b``, passes through as it is.
* Any other character is written as ``%XX`` for each byte of its UTF-8 encoding, with
  upper-case hex: space → ``%20``, ``%`` → ``%25``, ``é`` → ``%C3%A9``. A word that is
  exactly ``*`` or ``>`` becomes ``%2A`` or ``%3E``.
* An empty word becomes the lone token ``%`` (which no other word produces, since a
  ``%`` in a word is always escaped). So ``a..b`` → ``a.%.b``, ``.a`` → ``%.a``, and the
  empty routing key ``""`` → ``%``.

Unescaping accepts only what escaping produces (it re-escapes and compares), so the
mapping is a bijection between all strings and its image: two different originals
never give the same subject, and every produced subject is valid. Lone surrogates in
a Python string survive through the ``surrogatepass`` codec; raw bytes (a Kafka key)
escape the same way via `escape_bytes_token`.
"""

from __future__ import annotations

import re

from natsbridge.bridge.errors import MappingError

EMPTY_TOKEN = "%"
"""The token that stands for an empty word."""

_SAFE_WORD = re.compile(r"[!-$&-\-/-~]+")  # printable ASCII minus '%' and '.'
_SAFE_BYTES = frozenset(range(0x21, 0x7F)) - {ord("."), ord("%")}
_BYTE_TEXT = tuple(chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in range(256))
_HEX = re.compile(r"%([0-9A-F]{2})")


def escape_bytes_token(word: bytes) -> str:
    """Escape raw bytes (holding no meaning for ``.``) into one NATS token."""
    if not word:
        return EMPTY_TOKEN
    if word == b"*":
        return "%2A"
    if word == b">":
        return "%3E"
    return "".join([_BYTE_TEXT[b] for b in word])


def escape_token(word: str) -> str:
    """Escape one word (any text, ``.`` included) into one valid NATS token."""
    if _SAFE_WORD.fullmatch(word) is not None and word != "*" and word != ">":
        return word
    return escape_bytes_token(word.encode("utf-8", "surrogatepass"))


def unescape_bytes_token(token: str) -> bytes:
    """Inverse of `escape_bytes_token`; MappingError for a token escaping cannot produce."""
    if token == EMPTY_TOKEN:
        return b""
    try:
        raw = _HEX.sub(lambda m: chr(int(m.group(1), 16)), token).encode("latin-1")
    except UnicodeEncodeError:
        raw = None
    if raw is None or escape_bytes_token(raw) != token:
        raise MappingError(f"{token!r} is not an escaped token (see mappings.escaping)")
    return raw


def unescape_token(token: str) -> str:
    """Inverse of `escape_token`; MappingError for a token escaping cannot produce."""
    if _SAFE_WORD.fullmatch(token) is not None and token != "*" and token != ">":
        return token
    raw = unescape_bytes_token(token)
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise MappingError(f"{token!r} does not unescape to UTF-8 text") from None


def _is_plain_subject(text: str) -> bool:
    """True when every word of `text` is kept by escaping (plain string tests, no regex)."""
    return (
        text.isascii()
        and text.isprintable()
        and text != ""
        and " " not in text
        and "%" not in text
        and ".." not in text
        and text[0] != "."
        and text[-1] != "."
        and "*" not in text
        and ">" not in text
    )


def escape_words(text: str) -> str:
    """Escape `text` word by word: its dots stay token separators."""
    if _is_plain_subject(text):
        return text  # the common case: already a valid literal subject
    return ".".join([escape_token(word) for word in text.split(".")])


def unescape_words(subject: str) -> str:
    """Inverse of `escape_words`."""
    if _is_plain_subject(subject):
        return subject  # the common case: nothing was escaped
    return ".".join([unescape_token(token) for token in subject.split(".")])


def escape_bytes_words(data: bytes) -> str:
    """Escape raw bytes word by word (split at byte ``.``)."""
    return ".".join([escape_bytes_token(word) for word in data.split(b".")])


def unescape_bytes_words(subject: str) -> bytes:
    """Inverse of `escape_bytes_words`."""
    return b".".join([unescape_bytes_token(token) for token in subject.split(".")])
