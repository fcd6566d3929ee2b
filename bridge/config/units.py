"""Durations and sizes as people write them in config: `5s`, `250ms`, `2m`, `1MiB`.

Both are finite, not negative and bounded (MAX_SECONDS, MAX_BYTES): `.inf`, `.nan` or
`1e400` would pass a `> 0` check and break the first computation that uses them.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"\s*(\d{1,15}(?:\.\d{1,9})?)\s*(ms|s|m|h)?\s*")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"\s*(\d{1,15})\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*")
_SIZE_BYTES = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
MAX_SECONDS = 7 * 86400.0
"""The longest duration accepted: one week."""
MAX_BYTES = 1024**4
"""The largest size accepted: 1 TiB."""


def parse_duration(value: Any) -> Any:
    """Seconds from `1.5`, `"250ms"`, `"5s"`, `"2m"` or `"1h"`; other input is left to the type."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError("expected a duration such as 250ms, 5s, 2m or 1h")
        return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    return value


def parse_size(value: Any) -> Any:
    """Bytes from `1048576`, `"1MiB"`, `"64KB"`; other input is left to the type."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is None:
            raise ValueError("expected a size such as 1048576, 512KiB or 8MiB")
        return int(match.group(1)) * _SIZE_BYTES[match.group(2)]
    return value


def _bounded_seconds(value: float) -> float:
    if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise ValueError(f"expected a duration from 0 to {MAX_SECONDS:.0f}s (one week)")
    return value


def _bounded_bytes(value: int) -> int:
    if not 0 <= value <= MAX_BYTES:
        raise ValueError(f"expected a size from 0 to {MAX_BYTES} bytes (1 TiB)")
    return value


Seconds = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_bounded_seconds),
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"type": "string", "pattern": _DURATION.pattern}]}
    ),
]
"""A duration in seconds, written as a number or with a unit (ms, s, m, h)."""


def _bounded_age(value: float) -> float:
    if not (math.isfinite(value) and 0 < value <= MAX_AGE_SECONDS):
        raise ValueError(f"expected a duration above 0, up to {MAX_AGE_SECONDS // 3600:.0f}h")
    return value


MAX_AGE_SECONDS = 10 * 365 * 86400.0
"""The longest retention age accepted: ten years."""

Age = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_bounded_age),
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"type": "string", "pattern": _DURATION.pattern}]}
    ),
]
"""How long something is kept (a stream's max_age), like Seconds but up to ten years."""

Bytes = Annotated[
    int,
    BeforeValidator(parse_size),
    AfterValidator(_bounded_bytes),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": _SIZE.pattern}]}),
]
"""A size in bytes, written as a number or with a unit (KB, KiB, MB, MiB, GB, GiB)."""
