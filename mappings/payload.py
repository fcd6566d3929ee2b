"""Payload size rules.

NATS refuses a message whose payload is over the server's ``max_payload``: 1 MB
(1 MiB, 1048576 bytes) by default, configurable up to 64 MB, with 8 MB as the
recommended ceiling. A route's limit is the configured one, lowered to what the
target server announces in its INFO (`effective_limit`). A message over it raises
PayloadTooLarge, which the runtime sends to the dead-letter stream.
"""

from __future__ import annotations

from natsbridge.bridge.errors import ConfigError, PayloadTooLarge

MIB = 1024 * 1024

DEFAULT_MAX_PAYLOAD_BYTES = 1 * MIB
"""nats-server's default max_payload (1 MiB)."""
RECOMMENDED_MAX_PAYLOAD_BYTES = 8 * MIB
"""The largest max_payload NATS recommends; above it natsbridge warns."""
HARD_MAX_PAYLOAD_BYTES = 64 * MIB
"""The largest max_payload nats-server accepts."""


def check_payload(size: int, limit: int) -> None:
    """Raise PayloadTooLarge if a payload of `size` bytes is over `limit`."""
    if size > limit:
        raise PayloadTooLarge(size, limit)


def validate_payload_limit(limit: int) -> str | None:
    """Check a configured limit: ConfigError if impossible, a warning text if unwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ConfigError([f"max_payload must be a positive number of bytes, got {limit!r}"])
    if limit > HARD_MAX_PAYLOAD_BYTES:
        raise ConfigError(
            [
                f"max_payload of {limit} bytes is over NATS's hard limit of 64 MiB "
                f"({HARD_MAX_PAYLOAD_BYTES} bytes)"
            ]
        )
    if limit > RECOMMENDED_MAX_PAYLOAD_BYTES:
        return (
            f"max_payload of {limit} bytes is over the recommended 8 MiB "
            f"({RECOMMENDED_MAX_PAYLOAD_BYTES} bytes); large messages slow every client"
        )
    return None


def effective_limit(configured: int | None, server_max_payload: int | None) -> int:
    """The limit to enforce: the configured one (default 1 MiB), capped by the server's."""
    limit = DEFAULT_MAX_PAYLOAD_BYTES if configured is None else configured
    if server_max_payload is not None and server_max_payload > 0:
        limit = min(limit, server_max_payload)
    return limit
