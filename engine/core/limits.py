"""The bounds every job option and payload must stay within, and their checks.

They are checked at every edge (``task.enqueue``, ``app.enqueue`` by name, the HTTP API,
the CLI) with a :class:`ConfigurationError` that names the option, and checked again by the
worker on what it reads back from Redis, where an out-of-range value (an entry written by
hand, an older build, tampering) dead-letters the job instead of crashing the worker.

Why these numbers: every one of them still fits a datetime (year 9999) and Lua's integers
once added to the current time in milliseconds, with room to spare, and each is far beyond
what a real job asks for.
"""

from __future__ import annotations

import math
from typing import Any

from engine.core.errors import ConfigurationError

DAY_S = 86_400.0

MAX_TIMEOUT_S = 30 * DAY_S
"""A job's execution timeout: 30 days (a longer job wants checkpoints, not a timeout)."""
MAX_DELAY_S = 10 * 365 * DAY_S
"""How far ahead a job may be scheduled (``delay=``, ``run_at=``, backoff, ``Retry``): 10 years."""
MAX_ATTEMPTS = 1000
"""``max_attempts``: at the default backoff cap (600 s) 1,000 attempts span a week."""
MAX_PAYLOAD_DEPTH = 64
"""Nesting of containers in a job's arguments: deeper JSON is refused, so decoding and
rendering a payload never recurses without bound."""
MAX_WORKER_DEATHS = 3
"""A job whose worker died this many times while running it (delivered again each time,
never finished) is dead-lettered on its next delivery instead of killing another worker;
independent of ``max_attempts``, which counts attempts that ended with an outcome."""
MAX_KEY_LENGTH = 1024
"""Characters of a ``job_id`` or ``idempotency_key`` (both become parts of Redis keys)."""
MAX_EPOCH_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last instant a datetime holds."""


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def check_timeout(value: Any, what: str) -> float:
    if value is None:
        raise ConfigurationError(
            f"{what}: timeout=None is not allowed; every task needs a finite timeout in "
            "seconds (omit it to use the engine default)"
        )
    if not _number(value) or not 0 < value <= MAX_TIMEOUT_S:
        raise ConfigurationError(
            f"{what}: timeout must be a number of seconds > 0 and <= {MAX_TIMEOUT_S:,.0f} (30 days), "
            f"not {value!r}"
        )
    return float(value)


def check_attempts(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS:
        raise ConfigurationError(
            f"{what}: max_attempts must be an integer from 1 to {MAX_ATTEMPTS:,}, not {value!r}"
        )
    return value


def check_delay(value: Any, what: str) -> float:
    """A delay in seconds (``delay=``, a TTL): a finite number in [0, 10 years]."""
    if not _number(value) or not 0 <= value <= MAX_DELAY_S:
        raise ConfigurationError(
            f"{what} must be a number of seconds (or a timedelta) >= 0 and <= {MAX_DELAY_S:,.0f} "
            f"(10 years), not {value!r}"
        )
    return float(value)


_SCALARS = (str, int, float, bool, type(None))
_FLAT = frozenset(_SCALARS)
_FLAT_CONTAINERS = frozenset({tuple, list})


def payload_depth_exceeded(values: Any, limit: int = MAX_PAYLOAD_DEPTH) -> bool:
    """Whether containers nest deeper than ``limit`` inside ``values`` (the args list or
    kwargs dict itself is level 1). Iterative, so any depth is measured without recursion;
    plain scalars (the common case) cost one type check each."""
    if type(values) in _FLAT_CONTAINERS and limit >= 1:
        # The usual arguments, scalars only: no walk (checked for every job enqueued).
        for value in values:
            if type(value) not in _FLAT:
                break
        else:
            return False
    stack: list[tuple[Any, int]] = [(values, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            items: Any = value.values()
        elif isinstance(value, list | tuple | set | frozenset):
            items = value
        elif hasattr(value, "__struct_fields__"):  # msgspec Struct
            items = [getattr(value, f, None) for f in value.__struct_fields__]
        elif hasattr(value, "__dataclass_fields__"):
            items = [getattr(value, f, None) for f in value.__dataclass_fields__]
        else:
            continue
        for item in items:
            if not isinstance(item, _SCALARS):
                stack.append((item, depth + 1))
    return False
