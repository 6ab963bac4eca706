"""What every role of the gateway shares: the client, key names, scripts, clock, queue set."""

from __future__ import annotations

from typing import Any

from engine.broker import connection
from engine.broker.scripts.runner import Scripts
from engine.core.clock import Clock, SystemClock, now_ms
from engine.core.keys import Keys
from engine.core.urls import check_redis_url


class GatewayBase:
    """One client and the engine's scripts for one namespace; the role mixins
    (:mod:`~engine.broker.producing`, :mod:`~engine.broker.delivery`,
    :mod:`~engine.broker.admin`) add the methods, :class:`~engine.broker.gateway.Gateway`
    puts them together."""

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        connect_timeout: float = 5.0,
        max_connections: int = 100,
        clock: Clock | None = None,
    ) -> None:
        self.url = check_redis_url(url)
        self.keys = Keys(namespace)
        self.connect_timeout = connect_timeout
        self.clock: Clock = clock or SystemClock()
        self.redis: Any = connection.connect(
            url, connect_timeout=connect_timeout, max_connections=max_connections
        )
        self.scripts = Scripts(self.redis)
        self._known_queues: set[str] = set()

    def now_ms(self) -> int:
        """The engine's time in ms (the scripts take the server's own for what they store)."""
        return now_ms(self.clock)

    async def ping(self) -> None:
        """Fail fast, naming the URL, when the server cannot be reached."""
        await connection.ping(self.redis, self.url, self.connect_timeout)

    async def close(self) -> None:
        await connection.close(self.redis)

    async def remember_queue(self, queue: str) -> None:
        if queue not in self._known_queues:
            await self.redis.sadd(self.keys.queues, queue)
            self._known_queues.add(queue)
