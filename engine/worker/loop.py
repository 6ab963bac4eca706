"""The one loop every background duty runs in: call, wait, and back off on errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import structlog

from engine.broker import RedisError
from engine.core.backoff import reconnect_delay

log = structlog.get_logger("engine.worker")


async def forever(name: str, step: Callable[[], Awaitable[float]], worker_id: str) -> None:
    """Run ``step`` (returns seconds to wait) in a loop, backing off on errors: a duty that
    fails (Redis away, or data it did not expect) logs and tries again, and never takes
    the worker down with it."""
    failures = 0
    while True:
        try:
            wait = await step()
            if failures:
                log.info(f"{name}: working again", worker=worker_id)
            failures = 0
        except (RedisError, OSError) as exc:
            failures += 1
            wait = reconnect_delay(failures)
            log.warning(
                f"{name}: redis unavailable; retrying",
                worker=worker_id,
                error=str(exc),
                retry_in_s=round(wait, 2),
            )
        except Exception:
            failures += 1
            wait = reconnect_delay(failures)
            log.exception(f"{name}: failed unexpectedly; retrying", worker=worker_id, retry_in_s=wait)
        await anyio.sleep(wait)
