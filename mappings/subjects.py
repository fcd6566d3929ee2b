"""NATS subject grammar: validation, wildcard matching and a token-trie matcher.

The grammar is nats-server's (``server/sublist.go``):

* A subject is one or more tokens separated by ``.``. No token is empty, so ``a..b``,
  ``.a`` and ``a.`` are invalid.
* A token never holds whitespace. nats-server refuses space, tab, CR, LF and form feed;
  natsbridge also refuses every other ASCII control character (U+0000-U+001F, U+007F)
  and lone surrogates, which no client means to send and which break logs and tools.
  Every other character is allowed, including non-ASCII, ``$``, ``%``, ``/`` and ``:``.
* In a *pattern*, a token that is exactly ``*`` matches one token and a token that is
  exactly ``>`` matches one or more trailing tokens, so ``>`` must be the last token.
  ``*`` or ``>`` inside a longer token (``a*``, ``>b``) is an ordinary character, as in
  nats-server.
* A *publishable* subject has no wildcard token.
* At most ``MAX_SUBJECT_BYTES`` (4096) bytes of UTF-8: nats-server's default
  ``max_control_line`` is 4 KiB, so a longer subject could never be published.

Error messages count tokens from 1 ("empty token at position 2 in 'orders..created'")
and characters from 0 ("character ' ' (U+0020) at offset 3").

``match(pattern, subject)`` returns the text captured by each ``*`` in order and, when
the pattern ends in ``>``, the matched tail (its tokens joined by ``.``) as one last
capture. Templates number only the ``*`` captures (``{{wildcard(n)}}``, as nats-server
does), so the tail never shifts their numbering.

``Sublist`` holds many patterns in a token trie (nats-server's sublist idea) with a
bounded result cache: the embedded broker finds the streams a subject lands in with it.
It is not thread-safe: its owner uses it from one thread.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from natsbridge.bridge.errors import SubjectError

MAX_SUBJECT_BYTES = 4096
"""Longest subject accepted, in UTF-8 bytes (nats-server's default max_control_line)."""

SEPARATOR = "."
PWC = "*"  # partial wildcard: exactly one token
FWC = ">"  # full wildcard: one or more trailing tokens

# A token character: anything but '.', ASCII control characters, space and surrogates.
_TOKEN = r"[^.\x00-\x20\x7f\ud800-\udfff]+"
_WELL_FORMED = re.compile(rf"{_TOKEN}(?:\.{_TOKEN})*")
_WILDCARD_TOKEN = re.compile(r"(?:^|\.)[*>](?:\.|$)")
_BAD_CHAR = re.compile(r"[\x00-\x20\x7f\ud800-\udfff]")


def _show(text: str) -> str:
    """Quote `text` for an error message, shortened when long."""
    return repr(text if len(text) <= 120 else text[:100] + "…")


def _too_long(text: str) -> bool:
    # Characters are at most 4 bytes: skip the encode for the usual short subject.
    return len(text) * 4 > MAX_SUBJECT_BYTES and len(text.encode("utf-8", "surrogatepass")) > (
        MAX_SUBJECT_BYTES
    )


def _explain(text: str, what: str) -> str:
    """The first structural problem in `text` (a subject or pattern), as a message."""
    if text == "":
        return f"empty {what}"
    if _too_long(text):
        size = len(text.encode("utf-8", "surrogatepass"))
        return f"{what} {_show(text)} is {size} bytes long, over the {MAX_SUBJECT_BYTES}-byte limit"
    bad = _BAD_CHAR.search(text)
    if bad is not None:
        char = bad.group()
        kind = "whitespace" if char.isspace() else "character"
        return (
            f"{kind} {char!r} (U+{ord(char):04X}) at offset {bad.start()} in {what} "
            f"{_show(text)}: tokens cannot hold whitespace or control characters"
        )
    for position, token in enumerate(text.split(SEPARATOR), start=1):
        if token == "":
            return f"empty token at position {position} in {what} {_show(text)}"
    raise AssertionError(f"no problem found in {text!r}")  # pragma: no cover


def is_valid_subject(subject: str) -> bool:
    """True when `subject` is a publishable subject (no wildcards)."""
    # Fast path for the usual printable-ASCII subject: plain string tests, no regex.
    if subject.isascii() and subject.isprintable() and 0 < len(subject) <= MAX_SUBJECT_BYTES:
        if " " in subject or ".." in subject or subject[0] == SEPARATOR or subject[-1] == SEPARATOR:
            return False
        if "*" not in subject and ">" not in subject:
            return True
    return (
        _WELL_FORMED.fullmatch(subject) is not None
        and _WILDCARD_TOKEN.search(subject) is None
        and not _too_long(subject)
    )


def is_valid_pattern(pattern: str) -> bool:
    """True when `pattern` is a valid subscription pattern (wildcards allowed)."""
    if _WELL_FORMED.fullmatch(pattern) is None or _too_long(pattern):
        return False
    fwc = pattern.find(">")
    return fwc < 0 or FWC not in pattern.split(SEPARATOR)[:-1]


def validate_subject(subject: str) -> None:
    """Raise SubjectError unless `subject` is a publishable NATS subject."""
    if is_valid_subject(subject):
        return
    if _WELL_FORMED.fullmatch(subject) is None or _too_long(subject):
        raise SubjectError(_explain(subject, "subject"))
    for position, token in enumerate(subject.split(SEPARATOR), start=1):
        if token in (PWC, FWC):
            raise SubjectError(
                f"wildcard {token!r} at position {position} in {_show(subject)}: "
                "a subject to publish to cannot contain wildcards"
            )
    raise AssertionError(subject)  # pragma: no cover


def validate_pattern(pattern: str) -> None:
    """Raise SubjectError unless `pattern` is a valid subject or subscription pattern."""
    if _WELL_FORMED.fullmatch(pattern) is None or _too_long(pattern):
        raise SubjectError(_explain(pattern, "pattern"))
    if not is_valid_pattern(pattern):
        raise SubjectError(f"'>' must be the last token in {_show(pattern)}")


def tokens(subject: str) -> list[str]:
    """The tokens of `subject`."""
    return subject.split(SEPARATOR)


def has_wildcards(pattern: str) -> bool:
    """True when `pattern` holds a ``*`` or ``>`` token."""
    return _WILDCARD_TOKEN.search(pattern) is not None


def count_wildcards(pattern: str) -> int:
    """How many ``*`` tokens `pattern` holds (what ``{{wildcard(n)}}`` can address)."""
    return pattern.split(SEPARATOR).count(PWC)


def match_tokens(pattern: list[str], subject: list[str]) -> tuple[str, ...] | None:
    """Match tokenized `subject` against tokenized `pattern`; see `match`."""
    captures: list[str] = []
    last = len(pattern) - 1
    n = len(subject)
    for i, ptok in enumerate(pattern):
        if ptok == FWC and i == last:
            if i >= n:
                return None
            captures.append(SEPARATOR.join(subject[i:]))
            return tuple(captures)
        if i >= n:
            return None
        stok = subject[i]
        if ptok == PWC:
            captures.append(stok)
        elif ptok != stok:
            return None
    return tuple(captures) if n == len(pattern) else None


def match(pattern: str, subject: str) -> tuple[str, ...] | None:
    """Captures of `subject` against `pattern`, or None when it does not match.

    One capture per ``*`` in order, then the ``>`` tail joined by ``.`` when the pattern
    ends in ``>``. Neither argument is validated here (validate patterns once at config
    load; subjects arriving from NATS are valid).
    """
    if pattern == subject:
        return ()
    return match_tokens(pattern.split(SEPARATOR), subject.split(SEPARATOR))


T = TypeVar("T", bound=Hashable)


@dataclass(slots=True, eq=False)
class _Node(Generic[T]):
    literals: dict[str, _Node[T]] = field(default_factory=dict)
    pwc: _Node[T] | None = None
    fwc: _Node[T] | None = None
    items: dict[T, None] = field(default_factory=dict)  # an ordered set

    def empty(self) -> bool:
        return not (self.literals or self.pwc or self.fwc or self.items)


DEFAULT_CACHE_SIZE = 1024
"""Subjects whose match result a Sublist remembers (the cache is cleared when full)."""


class Sublist(Generic[T]):
    """Many patterns in a token trie, matched against subjects with a result cache.

    `insert(pattern, item)` registers `item` under `pattern`; inserting the same pair
    twice is a no-op. An item reached through several patterns is returned once. The
    order of items in a result is deterministic but unspecified; results are shared
    through the cache and are immutable tuples.
    """

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._root: _Node[T] = _Node()
        self._cache: dict[str, tuple[T, ...]] = {}
        self._cache_size = cache_size
        self._count = 0

    def __len__(self) -> int:
        """Number of (pattern, item) registrations."""
        return self._count

    def insert(self, pattern: str, item: T) -> None:
        """Register `item` under `pattern` (validated)."""
        validate_pattern(pattern)
        node = self._root
        for token in pattern.split(SEPARATOR):
            if token == PWC:
                if node.pwc is None:
                    node.pwc = _Node()
                node = node.pwc
            elif token == FWC:
                if node.fwc is None:
                    node.fwc = _Node()
                node = node.fwc
            else:
                child = node.literals.get(token)
                if child is None:
                    child = node.literals[token] = _Node()
                node = child
        if item not in node.items:
            node.items[item] = None
            self._count += 1
            self._cache.clear()

    def remove(self, pattern: str, item: T) -> bool:
        """Unregister `item` from `pattern`; False when it was not registered."""
        path: list[tuple[_Node[T], str]] = []
        node: _Node[T] | None = self._root
        for token in pattern.split(SEPARATOR):
            assert node is not None
            path.append((node, token))
            if token == PWC:
                node = node.pwc
            elif token == FWC:
                node = node.fwc
            else:
                node = node.literals.get(token)
            if node is None:
                return False
        assert node is not None
        if item not in node.items:
            return False
        del node.items[item]
        self._count -= 1
        self._cache.clear()
        # Prune nodes left empty, deepest first.
        for parent, token in reversed(path):
            child = (
                parent.pwc
                if token == PWC
                else parent.fwc
                if token == FWC
                else parent.literals.get(token)
            )
            if child is None or not child.empty():
                break
            if token == PWC:
                parent.pwc = None
            elif token == FWC:
                parent.fwc = None
            else:
                del parent.literals[token]
        return True

    def match(self, subject: str) -> tuple[T, ...]:
        """Every item whose pattern matches `subject`."""
        cached = self._cache.get(subject)
        if cached is not None:
            return cached
        found: dict[T, None] = {}
        self._collect(self._root, subject.split(SEPARATOR), 0, found)
        result = tuple(found)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[subject] = result
        return result

    def _collect(self, node: _Node[T], toks: list[str], i: int, found: dict[T, None]) -> None:
        n = len(toks)
        while True:
            if node.fwc is not None and i < n:
                found.update(node.fwc.items)
            if i == n:
                found.update(node.items)
                return
            if node.pwc is not None:
                self._collect(node.pwc, toks, i + 1, found)
            child = node.literals.get(toks[i])
            if child is None:
                return
            node = child
            i += 1
