"""Valid, unique config names for what a legacy broker calls its exchanges, queues and topics.

Legacy names allow what the config does not: a migration name is `[A-Za-z0-9][A-Za-z0-9_.-]*`
(its derived routes add `.to-legacy`, so at most `MIGRATION_NAME_MAX` characters), a
JetStream stream name has no `.`, and a subject token no space. Each name here is made valid,
then unique within one import by a `-2`, `-3` … suffix. Subject tokens are the bridge's own
reversible escaping (mappings.escaping), with the characters a template would read (`{`, `}`
and `$`) escaped too, so two legacy names never share a token.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from natsbridge.mappings.escaping import escape_token

MIGRATION_NAME_MAX = 48  # + ".to-legacy" stays within a route name's 64 characters
STREAM_NAME_MAX = 64
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_STREAM_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_TEMPLATE_CHARS = {"{": "%7B", "}": "%7D", "$": "%24"}
_PREFIX_TOKEN = re.compile(r"[!-~]+")  # printable ASCII, no space


def printable(text: str) -> bool:
    """True when `text` is non-empty and holds no control, format or unassigned characters.

    A config file cannot carry those (the loader refuses them), so such a legacy name is
    skipped with a note rather than written.
    """
    return bool(text) and not any(unicodedata.category(c).startswith("C") for c in text)


def subject_token(name: str) -> str:
    """One NATS subject token for a legacy name, distinct for distinct names."""
    token = escape_token(name)
    return "".join(_TEMPLATE_CHARS.get(c, c) for c in token)


def check_subject_prefix(prefix: str) -> str:
    """`prefix` if it is a literal NATS subject (no wildcards, `{`, `}` or `$`); else ValueError."""
    tokens = prefix.split(".")
    if not all(_PREFIX_TOKEN.fullmatch(t) for t in tokens) or any(c in prefix for c in "*>{}$%"):
        raise ValueError(
            f"expected a subject prefix of literal tokens such as 'legacy', found {prefix!r}"
        )
    return prefix


class Namer:
    """Hands out unique migration and stream names within one import."""

    def __init__(self) -> None:
        self._migrations: set[str] = set()
        self._streams: set[str] = set()
        self._tokens: set[str] = set()

    def migration(self, legacy_name: str) -> str:
        """A unique, valid migration name close to `legacy_name`.

        A name too long keeps its start and ends in a hash of the whole name, so names that
        differ only in their tails stay apart.
        """
        base = _NAME_UNSAFE.sub("-", legacy_name).strip("-._") or "flow"
        if len(base) > MIGRATION_NAME_MAX:
            digest = hashlib.sha256(legacy_name.encode("utf-8", "surrogatepass")).hexdigest()
            base = base[: MIGRATION_NAME_MAX - 9].rstrip("-._") + "-" + digest[:8]
        return _unique(base, self._migrations, MIGRATION_NAME_MAX)

    def stream(self, migration: str) -> str:
        """A unique JetStream stream name for a migration (upper case, no `.`)."""
        base = _STREAM_UNSAFE.sub("_", migration).upper()[:STREAM_NAME_MAX]
        return _unique(base, self._streams, STREAM_NAME_MAX)

    def token(self, legacy_name: str) -> str:
        """A subject token for `legacy_name` that no other flow of this import uses."""
        return _unique(subject_token(legacy_name), self._tokens, None)


def _unique(base: str, used: set[str], limit: int | None) -> str:
    name, number = base, 1
    while name in used:
        number += 1
        suffix = f"-{number}"
        name = (base[: limit - len(suffix)] if limit else base) + suffix
    used.add(name)
    return name
