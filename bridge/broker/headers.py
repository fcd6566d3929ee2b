"""Headers the embedded broker writes on dead letters.

`Bridge-Reason` comes from mappings.headers, the module that defines every header of the
bridge; the three below describe where a dead letter came from and belong there too.
"""

from __future__ import annotations

from mappings.headers import BRIDGE_REASON

BRIDGE_DEAD_LETTER_STREAM = "Bridge-Dead-Letter-Stream"
"""Stream the dead-lettered message was in (or was headed to)."""
BRIDGE_DEAD_LETTER_SEQ = "Bridge-Dead-Letter-Seq"
"""Its sequence in that stream (absent when it never reached the stream)."""
BRIDGE_DELIVERIES = "Bridge-Deliveries"
"""How many times it was delivered before being dead-lettered (decimal)."""

DEAD_LETTER_HEADERS = frozenset(
    {BRIDGE_REASON, BRIDGE_DEAD_LETTER_STREAM, BRIDGE_DEAD_LETTER_SEQ, BRIDGE_DELIVERIES}
)
"""Removed again when a dead letter is replayed into its stream."""

__all__ = [
    "BRIDGE_DEAD_LETTER_SEQ",
    "BRIDGE_DEAD_LETTER_STREAM",
    "BRIDGE_DELIVERIES",
    "BRIDGE_REASON",
    "DEAD_LETTER_HEADERS",
]
