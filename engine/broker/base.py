"""What every role of the gateway shares: the client, key names, scripts, clock, queue set."""

from __future__ import annotations

from typing import Any

from engine.broker import connection
from engine.broker.direct import DirectConnection, direct_connection
from engine.broker.scripts.runner import Scripts
from engine.core.clock import Clock, SystemClock, now_ms
from engine.core.errors import ConfigurationError
from engine.core.keys import Keys
from engine.core.urls import check_redis_url, mask_url


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
        cluster: bool | None = None,
        lease_ms: int = 30_000,
    ) -> None:
        self.url = check_redis_url(url)
        self.keys = Keys(namespace)
        self.connect_timeout = connect_timeout
        self.clock: Clock = clock or SystemClock()
        self.lease_ms = lease_ms
        """A running job's lease (the visibility timeout): how long its concurrency slot
        (engine.core.flow) lasts without a renewal."""
        self.cluster_mode = cluster
        """True/False as asked; None: detected by the first :meth:`ping`."""
        if cluster:
            client = connection.connect_cluster(url, connect_timeout=connect_timeout)
        else:
            client = connection.connect(url, connect_timeout=connect_timeout, max_connections=max_connections)
        self.redis: Any = connection.Client(client, cluster=bool(cluster))
        self.scripts = Scripts(self.redis)
        self.direct: DirectConnection | None = (
            None if cluster else direct_connection(client, connection.client_name())
        )
        """The producer's single enqueues' connection (engine.broker.direct), if the server
        is a plain TCP standalone one."""
        self.reader: DirectConnection | None = (
            None if cluster else direct_connection(client, connection.client_name())
        )
        """An idle worker's blocking reads' connection (one of their own: a blocking read
        holds its connection until the server answers), as :attr:`direct`."""
        self._known_queues: set[str] = set()
        self.lanes: dict[str, tuple[str, ...]] = {}
        """Queue (or partition) -> its priority lanes first to last (engine.core.priority),
        for those of the worker's queues that have more than the default one: what the
        worker reads (see Delivery.refresh_lanes)."""
        self._detected = bool(cluster)
        self.sharded: bool | None = None
        """Whether the scripts SPUBLISH and subscribers SSUBSCRIBE (Redis >= 7.0, any Valkey)
        rather than PUBLISH/SUBSCRIBE (Redis 6.2): decided once, by the first :meth:`ping`
        (or the first use of pub/sub before any ping); set it to force either."""

    @property
    def cluster(self) -> bool:
        """Whether this gateway talks to a Redis Cluster (known once :meth:`ping` ran)."""
        return bool(self.redis.cluster)

    def now_ms(self) -> int:
        """The engine's time in ms (the scripts take the server's own for what they store)."""
        return now_ms(self.clock)

    async def ping(self) -> None:
        """Fail fast, naming the URL, when the server cannot be reached; the first call also
        tells a cluster node from a standalone server (one INFO) and switches to a cluster
        client when ``cluster`` was left to detection, and decides whether pub/sub is sharded
        (one INFO server)."""
        await connection.ping(self.redis, self.url, self.connect_timeout)
        if not self._detected:
            await self._detect_cluster()
        await self.sharded_pubsub()

    async def _detect_cluster(self) -> None:
        if await connection.cluster_enabled(self.redis):
            if self.cluster_mode is False:
                raise ConfigurationError(
                    f"{mask_url(self.url)} is a node of a Redis Cluster, but cluster=False was "
                    "given: pass cluster=True, or leave it None to detect it"
                )
            plain = self.redis.current
            self._close_direct()
            self.redis.switch(
                connection.connect_cluster(self.url, connect_timeout=self.connect_timeout), True
            )
            await connection.close(plain)
            await connection.ping(self.redis, self.url, self.connect_timeout)
        self._detected = True

    async def sharded_pubsub(self) -> bool:
        """Whether the scripts SPUBLISH and subscribers SSUBSCRIBE (see :attr:`sharded`):
        one INFO server the first time, remembered after."""
        if self.sharded is None:
            self.sharded = await connection.has_sharded_pubsub(self.redis)
        return self.sharded

    def _close_direct(self) -> None:
        for direct in (self.direct, self.reader):
            if direct is not None:
                direct.close()
        self.direct = self.reader = None

    async def close(self) -> None:
        self._close_direct()
        await connection.close(self.redis)

    def lanes_of(self, queue: str) -> tuple[str, ...]:
        """The lanes of ``queue`` to read, first to last (the queue alone when it has one)."""
        return self.lanes.get(queue) or (queue,)

    async def remember_queue(self, queue: str) -> None:
        if queue not in self._known_queues:
            await self.redis.sadd(self.keys.queues, queue)
            self._known_queues.add(queue)
