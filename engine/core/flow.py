"""Flow control of a queue: pause, queue-wide concurrency and rate limits.

They are held in Redis, per queue, in one hash (``QueueKeys.flow``) that ``start.lua`` reads
with every start, so they hold across every worker process and machine, atomically with the
start itself:

- paused: nothing starts; enqueues, promotions and retries still land.
- concurrency N: at most N jobs of the queue run at once. Each running job holds a slot in
  a sorted set scored by its lease deadline, renewed with the entry's lease and given back
  by its outcome; a crashed worker's slots lapse with its leases, never leak.
- key concurrency N: at most N jobs of one concurrency key (``with_options(concurrency_key=)``,
  a customer, a tenant) run at once; jobs of other keys go on. Each key's running jobs hold
  slots in a sorted set of its own, as above; a job whose key is full stays pending to the
  worker that read it, which offers it again shortly (engine.worker.flow).
- rate limit "N/s" ("/m", "/h"): at most N starts per period, spaced evenly (a GCRA: each
  start books the next ``period / N`` of the line) with a burst of a tenth of a second's
  worth (at least one), so a second never holds much more than N starts and a period does
  not open with a burst of all of them. Jobs held back wait in the stream.

A partitioned queue splits its limits over its partitions (each partition is a queue of
its own, on its own slot): N slots over K partitions are N // K each (the first N % K get
one more), and so for rates. A key's limit is not split: jobs of one concurrency key go to
one partition (the key routes them, unless a ``partition_key`` does).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engine.core.errors import ConfigurationError

MAX_CONCURRENCY = 1_000_000
NOTICE = "flow"
"""Published on a queue's wake channel when its flow control changed (a resume, a limit):
workers look at the queue again at once."""
_PERIODS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
# The burst a rate allows: this much of a period's worth of starts at once, at least one.
BURST_MS = 100


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` starts per ``period_ms``."""

    count: int
    period_ms: int

    @property
    def interval_ms(self) -> float:
        """The spacing of starts."""
        return self.period_ms / self.count

    @property
    def burst(self) -> int:
        """Starts allowed back to back after a quiet spell."""
        return max(1, math.floor(BURST_MS / self.interval_ms))

    def __str__(self) -> str:
        unit = next(u for u, ms in _PERIODS_MS.items() if ms == self.period_ms)
        return f"{self.count}/{unit}"


def parse_rate(queue: str, text: object) -> Rate:
    """``"100/s"``, ``"10/m"``, ``"5/h"``; anything else raises, naming the value."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(
            f"queue {queue!r}: rate_limit={text!r} is not a rate: write it as N/s, N/m or N/h "
            "(N a whole number of job starts, e.g. '100/s')"
        )
    count = int(match.group(1))
    if not 1 <= count <= MAX_CONCURRENCY:
        raise ConfigurationError(
            f"queue {queue!r}: rate_limit={text!r} must allow between 1 and {MAX_CONCURRENCY:,} starts "
            "per period (to stop a queue, pause it)"
        )
    return Rate(count, _PERIODS_MS[match.group(2)])


def check_concurrency(queue: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        raise ConfigurationError(
            f"queue {queue!r}: {name}={value!r} must be a whole number from 1 to {MAX_CONCURRENCY:,} "
            "(to stop a queue, pause it)"
        )
    return value


@dataclass(frozen=True, slots=True)
class Limits:
    """A queue's declared limits (``app.queue(q, concurrency=, rate_limit=)``)."""

    concurrency: int | None = None
    rate: Rate | None = None
    key_concurrency: int | None = None

    @classmethod
    def declare(
        cls, queue: str, concurrency: object = None, rate_limit: object = None, key_concurrency: object = None
    ) -> Limits:
        return cls(
            None if concurrency is None else check_concurrency(queue, "concurrency", concurrency),
            None if rate_limit is None else parse_rate(queue, rate_limit),
            None if key_concurrency is None else check_concurrency(queue, "key_concurrency", key_concurrency),
        )

    def __bool__(self) -> bool:
        return self.concurrency is not None or self.rate is not None or self.key_concurrency is not None

    def check_split(self, queue: str, partitions: int) -> None:
        """Each of ``partitions`` must get at least one slot and one start per period."""
        rate = None if self.rate is None else self.rate.count
        for name, value in (("concurrency", self.concurrency), ("rate_limit", rate)):
            if value is not None and value < partitions:
                raise ConfigurationError(
                    f"queue {queue!r}: {name} is split over its {partitions} partitions, so it must "
                    f"be at least {partitions} (it is {value})"
                )

    def fields(self, index: int = 0, partitions: int = 1) -> dict[str, str]:
        """The flow hash's limit fields for partition ``index`` of ``partitions`` (all of
        them, "" for a limit not set: the caller deletes those)."""

        def share(total: int) -> int:
            return total // partitions + (1 if index < total % partitions else 0)

        out = {"concurrency": "", "rate_interval": "", "rate_burst": "", "rate": "", "key_concurrency": ""}
        if self.concurrency is not None:
            out["concurrency"] = str(share(self.concurrency))
        if self.key_concurrency is not None:
            out["key_concurrency"] = str(self.key_concurrency)
        if self.rate is not None:
            rate = Rate(share(self.rate.count), self.rate.period_ms)
            out["rate_interval"] = repr(rate.interval_ms)
            out["rate_burst"] = str(rate.burst)
            out["rate"] = str(self.rate)
        return out
