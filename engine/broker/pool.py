"""A Redis connection pool that waits for a free connection instead of failing.

redis-py's asyncio pool raises MaxConnectionsError once ``max_connections`` (100) are in use:
at a worker concurrency above 100 with tasks calling ``ctx.log``, or a producer with many
calls in flight, calls failed. Its BlockingConnectionPool waits, but arms a timeout on every
call, which cost about 15 us of CPU per command here. This pool takes the plain pool's fast
path, and only a caller that finds every connection in use waits, for one to be released.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError


class WaitingConnectionPool(aioredis.ConnectionPool):
    """``max_connections`` at most; past that a caller waits up to ``wait_timeout`` seconds
    (then a redis ConnectionError, which callers treat like an unreachable server)."""

    def __init__(self, *args: Any, wait_timeout: float = 60.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wait_timeout = wait_timeout
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        deadline: float | None = None
        while True:
            try:
                return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
            except MaxConnectionsError:
                loop = asyncio.get_running_loop()
                deadline = deadline or loop.time() + self.wait_timeout
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
                except TimeoutError:
                    raise RedisConnectionError(
                        f"no Redis connection free within {self.wait_timeout:g}s "
                        f"({self.max_connections} in use)"
                    ) from None
                finally:
                    if not waiter.done():
                        waiter.cancel()
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                # Another caller may take the released connection first: try again.

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break


class WaitingSentinelPool(WaitingConnectionPool, SentinelConnectionPool):
    """The same waiting, for the pool of a master found through Sentinel (which re-asks the
    sentinels for the master's address on every new connection, so a failover is followed)."""
