"""Retry timing as a pure function of the attempt number (and a random source for jitter)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from engine.core.errors import ConfigurationError
from engine.core.limits import MAX_DELAY_S


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``min(max, initial * factor ** (attempt - 1))``, then jittered.

    ``jitter`` is the fraction of the delay that is randomised (0.2 -> the delay is drawn
    uniformly from [0.8 d, 1.2 d], still capped at ``max``), so that jobs which failed
    together do not all come back in the same instant.
    """

    initial: float = 1.0
    factor: float = 2.0
    max: float = 600.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        for name in ("initial", "factor", "max", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigurationError(f"Backoff({name}={value!r}) must be a finite number >= 0")
        for name in ("initial", "max"):
            if getattr(self, name) > MAX_DELAY_S:
                raise ConfigurationError(
                    f"Backoff({name}={getattr(self, name)!r}) must be at most {MAX_DELAY_S:,.0f} s (10 years)"
                )
        if self.factor < 1:
            raise ConfigurationError(f"Backoff(factor={self.factor}) must be >= 1")
        if self.jitter > 1:
            raise ConfigurationError(f"Backoff(jitter={self.jitter}) must be between 0 and 1")

    def base_delay(self, attempt: int) -> float:
        """The un-jittered delay after failed attempt number ``attempt`` (1-based)."""
        exponent = max(attempt - 1, 0)
        # factor ** exponent overflows to inf for large attempts; cap before multiplying.
        try:
            raw = self.initial * self.factor**exponent
        except OverflowError:
            raw = math.inf
        return min(self.max, raw)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay (seconds) before the retry that follows failed attempt ``attempt``."""
        base = self.base_delay(attempt)
        if self.jitter == 0 or base == 0:
            return base
        spread = base * self.jitter
        value = base + (rng or random).uniform(-spread, spread)
        return min(self.max, max(0.0, value))


MAX_RECONNECT_DELAY_S = 5.0


def reconnect_delay(failures: int) -> float:
    """How long a loop waits after ``failures`` consecutive errors (a server away, say):
    50 ms doubling to 5 s, jittered so that a fleet does not reconnect in step."""
    # The exponent is capped: 2.0**1024 overflows, and a loop an hour into an outage must not
    # raise from its own error handler.
    doubled = 0.05 * 2.0 ** min(max(failures, 0), 16)
    return float(min(MAX_RECONNECT_DELAY_S, doubled) * random.uniform(0.5, 1.0))
