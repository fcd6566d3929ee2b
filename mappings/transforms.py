"""NATS's subject-transform functions, with nats-server's semantics.

Behaviour follows nats-server's ``server/subject_transform.go``. Each function takes the
token(s) captured by ``*`` wildcards and returns text whose dots are token separators.

* ``partition(n, a, b…)``: FNV-1a 32-bit hash of the captured tokens *concatenated with
  no separator*, modulo ``n``; ``partition(n)`` alone hashes the whole source address
  (its tokens joined by ``.``). ``n = 0`` gives ``0``. Vectors from nats-server's tests:
  ``partition(10)`` of ``foo`` → ``3``, of ``foo.bar`` → ``6``, of ``qux`` → ``9``.
* ``splitFromLeft(i, n)`` / ``splitFromRight(i, n)``: cut the token in two, ``n``
  characters from the left / right; unchanged unless ``0 < n < len``.
* ``sliceFromLeft(i, n)`` / ``sliceFromRight(i, n)``: cut the token into pieces of ``n``
  characters counted from the left / right (the short piece is at the far end);
  unchanged unless ``0 < n < len``.
* ``left(i, n)`` / ``right(i, n)``: the first / last ``n`` characters; unchanged unless
  ``0 < n < len``.
* ``split(i, sep)``: split the token at every ``sep`` and drop empty pieces
  (``-abc-def--ghi-`` → ``abc.def.ghi``). nats-server can emit an empty token when the
  token starts with two separators; we drop every empty piece, which is what it means.

One deliberate difference: nats-server counts bytes, we count characters. They agree
on ASCII; on non-ASCII text ours never cuts a character in half.
"""

from __future__ import annotations

from functools import lru_cache

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def fnv1a_32(data: bytes) -> int:
    """The 32-bit FNV-1a hash of `data` (Go's ``hash/fnv.New32a``)."""
    h = _FNV32_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


@lru_cache(maxsize=4096)  # keys repeat (device ids, customers): skip the byte loop
def partition(key: str, buckets: int) -> str:
    """nats-server's hash partition of `key` into `buckets` buckets, as decimal text."""
    if buckets == 0:
        return "0"
    return str(fnv1a_32(key.encode("utf-8", "surrogatepass")) % buckets)


def split(token: str, sep: str) -> list[str]:
    """Pieces of `token` between occurrences of `sep`, empty pieces dropped."""
    return [piece for piece in token.split(sep) if piece]


def split_from_left(token: str, n: int) -> list[str]:
    """`token` cut in two, `n` characters from the left."""
    return [token[:n], token[n:]] if 0 < n < len(token) else [token]


def split_from_right(token: str, n: int) -> list[str]:
    """`token` cut in two, `n` characters from the right."""
    cut = len(token) - n
    return [token[:cut], token[cut:]] if 0 < n < len(token) else [token]


def slice_from_left(token: str, n: int) -> list[str]:
    """`token` in pieces of `n` characters from the left; the last one may be shorter."""
    if not 0 < n < len(token):
        return [token]
    return [token[i : i + n] for i in range(0, len(token), n)]


def slice_from_right(token: str, n: int) -> list[str]:
    """`token` in pieces of `n` characters from the right; the first one may be shorter."""
    if not 0 < n < len(token):
        return [token]
    head = len(token) % n
    pieces = [token[:head]] if head else []
    pieces.extend(token[i : i + n] for i in range(head, len(token), n))
    return pieces


def left(token: str, n: int) -> list[str]:
    """The first `n` characters of `token`."""
    return [token[:n]] if 0 < n < len(token) else [token]


def right(token: str, n: int) -> list[str]:
    """The last `n` characters of `token`."""
    return [token[-n:]] if 0 < n < len(token) else [token]
