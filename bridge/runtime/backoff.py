"""Exponential back-off with full jitter, for reconnects and retries."""

from __future__ import annotations

import random

from natsbridge.bridge.config.model import Retry

_JITTER = random.Random()
"""The jitter of every Backoff without its own generator: seeding one from the OS costs a
system call, and the runtime makes a Backoff for every buffer call and settled window."""


class Backoff:
    """Delays that grow by `multiplier` from `initial` up to `max`, each drawn with jitter.

    Full jitter (a uniform draw between half and all of the current step) keeps many
    bridges that lost the same broker from reconnecting in lock-step.
    """

    def __init__(self, policy: Retry, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or _JITTER
        self.step = policy.initial

    def next(self) -> float:
        """The next delay in seconds."""
        delay = self.rng.uniform(self.step / 2, self.step)
        self.step = min(self.step * self.policy.multiplier, self.policy.max)
        return delay

    def reset(self) -> None:
        """Start again from `initial` (after a success)."""
        self.step = self.policy.initial
