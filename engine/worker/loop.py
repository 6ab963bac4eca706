"""The one loop every background duty runs in: call, wait on the engine's clock, back off on errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import structlog

from engine.broker import RedisError
from engine.core.backoff import reconnect_delay
from engine.core.clock import Clock

log = structlog.get_logger("engine.worker")


async def forever(name: str, step: Callable[[], Awaitable[float]], worker_id: str, clock: Clock) -> None:
    """Run ``step`` (returns seconds to wait on ``clock``) in a loop, backing off on errors: a
    duty that fails (Redis away, or data it did not expect) logs and tries again, and never
    takes the worker down with it."""
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
        await clock.sleep(wait)


async def until(event: anyio.Event, seconds: float, clock: Clock) -> None:
    """Wait until ``event`` is set or ``seconds`` pass on ``clock``, whichever comes first
    (``anyio.move_on_after`` would measure loop time, which a test's fake clock cannot move)."""
    # The deadline is fixed now, not when the ringing task first runs: time may move on (a
    # fake clock advanced by a test) before that task is scheduled.
    deadline = clock.monotonic() + seconds
    async with anyio.create_task_group() as group:

        async def ring() -> None:
            await clock.sleep(deadline - clock.monotonic())
            group.cancel_scope.cancel()

        group.start_soon(ring)
        await event.wait()
        group.cancel_scope.cancel()
