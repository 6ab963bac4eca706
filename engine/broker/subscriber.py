"""One subscriber on a gateway's channels: classic (SUBSCRIBE) or sharded (SSUBSCRIBE), on
one server or on the nodes of a cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from engine.broker.connection import is_cluster

Message = dict[str, Any]
"""A pub/sub message as redis-py gives it: type ("message" or "smessage"), channel, data."""

# How long one wait of a node's reader lasts before it looks again.
_NODE_POLL_S = 1.0


class Subscriber:
    """One subscriber on a gateway's channels, classic (SUBSCRIBE) or sharded (SSUBSCRIBE).

    On one server that is one connection. A cluster's sharded subscriptions hold one
    connection per node owning some of the channels, each read by a task of its own so that
    no node waits on another's timeout. Those connections come from a pool of their own per
    node, not from the cluster client's: redis-py's ClusterPubSub borrows the node's command
    connections, and under load a pipeline and a subscription ended up reading the same
    socket ("read() called while another coroutine is already waiting").

    Messages sent while a connection was down are lost: callers keep a safety net (a
    periodic re-check). A lost connection, or a channel whose slot moved to another node
    (the server then ends that subscription by itself), raises from :meth:`get_message`;
    the caller makes a new subscriber, which routes by the client's current slot map.
    """

    def __init__(self, redis: Any, decide: Callable[[], Awaitable[bool]]) -> None:
        self._redis = redis
        self._decide = decide
        self._sharded: bool | None = None
        self._cluster = is_cluster(redis)
        # A cluster's subscriptions are held per node (see _NodeSubscriptions).
        self._pubsub: Any = None if self._cluster else redis.pubsub(ignore_subscribe_messages=True)
        self._nodes: dict[str, _NodeSubscriptions] = {}
        self._inbox: asyncio.Queue[Message | BaseException] = asyncio.Queue()

    async def __aenter__(self) -> Subscriber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _is_sharded(self) -> bool:
        if self._sharded is None:
            self._sharded = await self._decide()
        return self._sharded

    async def subscribe(self, *channels: str) -> None:
        if not channels:
            return
        if self._cluster:
            sharded = await self._is_sharded()
            for channel in channels:
                await self._node_of(channel, sharded).subscribe(channel)
        elif await self._is_sharded():
            await self._pubsub.ssubscribe(*channels)
        else:
            await self._pubsub.subscribe(*channels)

    async def unsubscribe(self, *channels: str) -> None:
        if not channels:
            return
        if self._cluster:
            for channel in channels:
                for node in self._nodes.values():
                    if channel in node.channels:
                        await node.unsubscribe(channel)
        elif await self._is_sharded():
            await self._pubsub.sunsubscribe(*channels)
        else:
            await self._pubsub.unsubscribe(*channels)

    def _node_of(self, channel: str, sharded: bool) -> _NodeSubscriptions:
        """Where a channel is subscribed: its slot's master, or for classic pub/sub (Redis
        6.2, where every node hears every PUBLISH) one node for all channels."""
        if not sharded and self._nodes:
            return next(iter(self._nodes.values()))
        node = self._redis.get_node_from_key(channel) if sharded else self._redis.get_default_node()
        if node is None:
            raise RedisConnectionError(f"no cluster node serves the slot of {channel!r}")
        subscriptions = self._nodes.get(node.name)
        if subscriptions is None:
            subscriptions = self._nodes[node.name] = _NodeSubscriptions(node, sharded, self._inbox)
        return subscriptions

    async def get_message(self, timeout: float) -> Message | None:
        """The next message of a subscribed channel, or None after ``timeout`` seconds."""
        if self._pubsub is not None:
            message = await self._pubsub.get_message(timeout=timeout)
            if message is not None and message.get("type") in ("message", "smessage"):
                return dict(message)
            return None
        # A cluster's: the node readers' inbox.
        try:
            item = await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        await asyncio.gather(*(node.aclose() for node in nodes), return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()


class _NodeSubscriptions:
    """The subscriptions held on one cluster node: a connection of their own (a
    one-connection pool made from the node's connection settings) and the task reading it."""

    def __init__(self, node: Any, sharded: bool, inbox: asyncio.Queue[Message | BaseException]) -> None:
        self.name: str = node.name
        self.sharded = sharded
        self.channels: set[str] = set()
        self._inbox = inbox
        self._pool = aioredis.ConnectionPool(
            connection_class=node.connection_class, max_connections=1, **node.connection_kwargs
        )
        self._pubsub: Any = aioredis.Redis(connection_pool=self._pool).pubsub()
        self._reader: asyncio.Task[None] | None = None

    async def subscribe(self, channel: str) -> None:
        if self.sharded:
            # One channel per SSUBSCRIBE: channels of different slots in one are CROSSSLOT.
            await self._pubsub.ssubscribe(channel)
        else:
            await self._pubsub.subscribe(channel)
        self.channels.add(channel)
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self.sharded:
            await self._pubsub.sunsubscribe(channel)
        else:
            await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        try:
            while True:
                message = await self._pubsub.get_message(timeout=_NODE_POLL_S)
                if message is None:
                    continue
                kind, channel = message.get("type"), message.get("channel")
                if kind in ("smessage", "message"):
                    self._inbox.put_nowait(dict(message))
                elif kind == "sunsubscribe" and channel in self.channels:
                    # Not asked for: the channel's slot moved away from this node.
                    raise RedisConnectionError(f"the slot of {channel!r} left node {self.name}")
        except (RedisError, OSError) as exc:
            self._inbox.put_nowait(exc)
        except Exception as exc:  # a connection closed under the read, for one
            self._inbox.put_nowait(RedisConnectionError(f"subscription on {self.name} failed: {exc!r}"))

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        try:
            await self._pubsub.aclose()
        finally:
            await self._pool.disconnect()
