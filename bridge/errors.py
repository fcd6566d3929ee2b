"""The project's error tree; every error natsbridge raises derives from BridgeError.

    BridgeError
    ├── ConfigError                      the config file is wrong (carries every problem found)
    ├── RetryableError                   try again later: the message itself is fine
    │   ├── ConnectionLost
    │   └── BridgeTimeout (TimeoutError)
    └── PermanentError                   retrying cannot help: dead-letter the message
        ├── MappingError                 the message cannot be translated to the target
        │   ├── SubjectError             not a valid NATS subject or pattern
        │   ├── TemplateError            a template cannot be compiled or rendered
        │   └── HeaderError              a header name or value the target cannot carry
        ├── PayloadTooLarge              over the target's payload limit
        └── MessageRejected              the broker refused this message for good
    StoreError (BridgeError)             the embedded broker's store
    ├── StoreCorrupted                   the database file is damaged: never silently emptied
    ├── StreamFull                       limits reached with discard policy "new"
    └── NotFound (LookupError)           no such stream or consumer

The runtime decides retry versus dead-letter from these types alone.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error natsbridge raises."""


class ConfigError(BridgeError):
    """The configuration is invalid; `problems` holds every problem found, in file order."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class RetryableError(BridgeError):
    """A transient failure: the same message may succeed later."""


class ConnectionLost(RetryableError):
    """The connection to a broker went away."""


class BridgeTimeout(RetryableError, TimeoutError):
    """A broker did not answer in time."""


class PermanentError(BridgeError):
    """A failure that retrying cannot fix: the message goes to the dead-letter stream."""


class MappingError(PermanentError):
    """A message or address cannot be translated to the target."""


class SubjectError(MappingError, ValueError):
    """Not a valid NATS subject or subject pattern."""


class TemplateError(MappingError, ValueError):
    """A template cannot be compiled or rendered; `position` is the 0-based offset in it."""

    def __init__(self, message: str, position: int | None = None) -> None:
        self.position = position
        super().__init__(message)


class HeaderError(MappingError, ValueError):
    """A header name or value that the target cannot carry."""


class HopLimitExceeded(MappingError):
    """The message has crossed more bridges than `bridge.hop_limit` allows (a loop of bridges)."""


class PayloadTooLarge(PermanentError):
    """The payload exceeds the target's limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"payload of {size} bytes exceeds the limit of {limit} bytes")


class MessageRejected(PermanentError):
    """The broker refused this message for good (for example an unroutable mandatory publish)."""


class StoreError(BridgeError):
    """The embedded broker's store failed."""


class StoreCorrupted(StoreError):
    """The store's database file is damaged; it is reported, never silently emptied."""


class StreamFull(StoreError):
    """A stream's limits are reached and its discard policy is "new"."""


class NotFound(StoreError, LookupError):
    """No such stream or consumer."""
