"""The Redis client: standalone or cluster, the pooled client factory, ping, cluster
detection and close (URL checks: ``core/urls.py``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from engine.broker.pool import WaitingConnectionPool, WaitingSentinelPool
from engine.core.errors import ConfigurationError, ConnectionFailed
from engine.core.urls import SENTINEL_SCHEMES, check_redis_url, client_url, mask_url, parse_sentinel_url

# How long a command waits for a free pooled connection before giving up.
POOL_WAIT_S = 60.0
# redis-py's cluster client keeps a pool per node that raises, instead of waiting, past its
# limit (100 by default): a worker's runners, blocked reads and ctx.log calls can pass that.
CLUSTER_MAX_CONNECTIONS_PER_NODE = 10_000

# Options both clients take: text replies, a quick connect, keepalives.
_COMMON: dict[str, Any] = {
    "decode_responses": True,
    # Replies are text, and any bytes decode: a stream entry or hash written by someone
    # else with bytes that are not UTF-8 arrives with them escaped ("\xff") instead of
    # raising UnicodeDecodeError out of whatever read it (a worker's fetch, the reclaimer, a
    # DLQ listing). What the engine writes is always UTF-8, so its own data is unaffected.
    "encoding_errors": "backslashreplace",
    "socket_keepalive": True,
}


def hiredis_packing(cls: Any) -> Any:
    """The connection class ``cls`` packing commands with hiredis (C), as redis-py's sync
    client does, instead of its asyncio client's packer (Python, about 0.6 us an argument:
    an enqueue's call has 36, and packing them was half of what an enqueue spent before it
    was sent). What hiredis does not take (a command name of two words, None, bool, a
    bytearray, text that is not UTF-8) goes to redis-py's packer, which packs or refuses it
    as ever."""
    if cls in _PACKING:
        return _PACKING[cls]

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        first = args[0]
        if type(first) is str and " " not in first:
            try:
                return [hiredis.pack_command(args)]
            except (TypeError, UnicodeEncodeError):
                pass
        return cls.pack_command(self, *args)  # type: ignore[no-any-return]

    packing = type(cls.__name__, (cls,), {"pack_command": pack_command, "__module__": __name__})
    _PACKING[cls] = packing
    return packing


_PACKING: dict[type[Any], type[Any]] = {}


class Client:
    """The client a gateway holds, chosen at connect (a plain one until a cluster is
    detected): everything made from the gateway (scripts, reads, the outbox) holds this
    and so follows the switch. Attribute access goes to the client of the moment."""

    __slots__ = ("cluster", "current")

    def __init__(self, current: Any, cluster: bool) -> None:
        self.current = current
        self.cluster = cluster

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)

    def switch(self, current: Any, cluster: bool) -> None:
        self.current = current
        self.cluster = cluster


_SALT = os.urandom(3).hex()


def client_name() -> str:
    """The name this process's connections give themselves (CLIENT SETNAME), so that it can
    find its own blocked reads in CLIENT LIST (:func:`unblock_reads`)."""
    return f"engine-{os.getpid()}-{_SALT}"


def connect(url: str, *, connect_timeout: float = 5.0, max_connections: int = 100) -> Any:
    """A standalone client on a pool of its own (connections are opened on first use, not here).

    redis-py's type hints are unions of bytes/str that fight decode_responses=True; the
    broker is the one place that talks to it, so the client is typed loosely (``Any``).
    """
    if url.split("://", 1)[0].lower() in SENTINEL_SCHEMES:
        return connect_sentinel(url, connect_timeout=connect_timeout, max_connections=max_connections)
    # Waits for a free connection past max_connections instead of failing (engine.broker.pool).
    pool = WaitingConnectionPool.from_url(
        client_url(check_redis_url(url)),
        max_connections=max_connections,
        wait_timeout=POOL_WAIT_S,
        socket_connect_timeout=connect_timeout,
        health_check_interval=30,
        # Ride out a dropped connection or a quick restart (about 1.5 s at most), then
        # let the caller see the error; the worker's loops add their own backoff.
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5),
        client_name=client_name(),
        **_COMMON,
    )
    pool.connection_class = hiredis_packing(pool.connection_class)
    return aioredis.Redis.from_pool(pool)


def connect_sentinel(url: str, *, connect_timeout: float = 5.0, max_connections: int = 100) -> Any:
    """A client on the master a Sentinel set names (``redis+sentinel://``): every new
    connection asks the sentinels where the master is now, so after a failover the pool's
    next connection reaches the new one (the loops above retry through the switch)."""
    target = parse_sentinel_url(url)
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": connect_timeout,
    }
    if target.sentinel_password:
        sentinel_options["password"] = target.sentinel_password
    # Through Any: redis-py types Sentinel's constructor from 8.2 on, not before.
    sentinel_class: Any = Sentinel
    sentinel = sentinel_class(list(target.sentinels), sentinel_kwargs=sentinel_options)
    client = sentinel.master_for(
        target.master,
        connection_pool_class=WaitingSentinelPool,
        wait_timeout=POOL_WAIT_S,
        max_connections=max_connections,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.ssl,
        socket_connect_timeout=connect_timeout,
        health_check_interval=30,
        # A master demoted by the failover answers READONLY until the pool reconnects.
        retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), retries=5),
        client_name=client_name(),
        **_COMMON,
    )
    pool = client.connection_pool
    pool.connection_class = hiredis_packing(pool.connection_class)
    return client


def connect_cluster(url: str, *, connect_timeout: float = 5.0) -> Any:
    """A Redis Cluster client seeded by ``url`` (any node; the others are discovered)."""
    target = client_url(check_redis_url(url))
    if urlsplit(target).path.strip("/") not in ("", "0"):
        raise ConfigurationError(
            f"{mask_url(url)} names a database other than 0: a Redis Cluster has only database 0"
        )
    client = RedisCluster.from_url(
        target,
        max_connections=CLUSTER_MAX_CONNECTIONS_PER_NODE,
        socket_connect_timeout=connect_timeout,
        # A failover takes the cluster a few seconds (node timeout + election): retry through
        # it, each retry refreshing the slot map, then let the caller's loops back off.
        retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), retries=5),
        client_name=client_name(),
        **_COMMON,
    )
    # Nodes open their connections on first use: the seed nodes made so far, and the options
    # every node discovered later is made with.
    nodes = client.nodes_manager
    nodes.connection_kwargs["connection_class"] = hiredis_packing(nodes.connection_kwargs["connection_class"])
    for node in nodes.startup_nodes.values():
        node.connection_class = hiredis_packing(node.connection_class)
    return client


def is_cluster(redis: Any) -> bool:
    """Whether a client (a gateway's :class:`Client`, or one made elsewhere) is a cluster client."""
    return isinstance(getattr(redis, "current", redis), RedisCluster)


def xreadgroup_command(
    group: str, consumer: str, streams: Sequence[str], ids: Sequence[str], *, count: int, block_ms: int | None
) -> list[Any]:
    """The XREADGROUP command's words (for :func:`xreadgroup`, or a direct connection)."""
    args: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
    if block_ms is not None:
        args += ["BLOCK", block_ms]
    return [*args, "STREAMS", *streams, *ids]


async def xreadgroup(
    redis: Any,
    group: str,
    consumer: str,
    streams: Sequence[str],
    ids: Sequence[str],
    *,
    count: int,
    block_ms: int | None,
    **options: Any,
) -> Any:
    """XREADGROUP as a raw command (replies parsed as redis-py's xreadgroup parses them). In a
    cluster the streams must share a slot, and the read is routed by hand: otherwise redis-py
    asks the server for the keys of every read (XREADGROUP's keys are "movable")."""
    args = xreadgroup_command(group, consumer, streams, ids, count=count, block_ms=block_ms)
    if is_cluster(redis):
        options["target_nodes"] = redis.get_node_from_key(streams[0])
    return await redis.execute_command(*args, **options)


async def cluster_enabled(redis: Any) -> bool:
    """Whether the server behind a standalone client is a cluster node (INFO cluster)."""
    info = await redis.info("cluster")
    return str(info.get("cluster_enabled", "0")) == "1"


async def blocked_reads(redis: Any) -> list[tuple[str | None, int]]:
    """This process's connections blocked in XREADGROUP (its client name, see
    :func:`client_name`): (node name in a cluster or None, client id) each."""
    if is_cluster(redis):
        per_node = await redis.client_list(target_nodes=RedisCluster.ALL_NODES)
        lists = list(per_node.items()) if isinstance(per_node, dict) else []
    else:
        lists = [(None, await redis.client_list())]
    mine = client_name()
    return [
        (node_name, int(client["id"]))
        for node_name, clients in lists
        for client in clients
        if client.get("name") == mine and client.get("cmd") == "xreadgroup" and "b" in client.get("flags", "")
    ]


async def unblock_reads(redis: Any) -> int:
    """End this process's blocking XREADGROUPs now, each as if its BLOCK ran out (CLIENT
    UNBLOCK's default: the read returns nothing and delivers nothing, so nothing is left
    pending); how many. A stopping worker then need not wait out a second of BLOCK. 0 where
    the server refuses CLIENT LIST/UNBLOCK (an ACL): the reads then end by themselves."""
    try:
        ended = 0
        for node_name, client_id in await blocked_reads(redis):
            if node_name is None:
                ended += bool(await redis.client_unblock(client_id))
            else:
                node = redis.get_node(node_name=node_name)
                ended += bool(await redis.execute_command("CLIENT UNBLOCK", client_id, target_nodes=node))
        return ended
    except ResponseError:
        return 0


def _version(text: object) -> tuple[int, ...]:
    parts = []
    for part in str(text).split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def _spublish_in(info: dict[str, Any]) -> bool:
    """SPUBLISH/SSUBSCRIBE came with Redis 7.0; every Valkey has them (it forked 7.2)."""
    return "valkey_version" in info or _version(info.get("redis_version", "0")) >= (7,)


async def has_sharded_pubsub(redis: Any) -> bool:
    """Whether the server (every node of a cluster) has sharded pub/sub (``INFO server``).
    A server that refuses INFO gets classic pub/sub, which every version has."""
    try:
        if is_cluster(redis):
            replies = await redis.info("server", target_nodes=RedisCluster.ALL_NODES)
            nested = all(isinstance(reply, dict) for reply in replies.values())
            infos = list(replies.values()) if nested else [replies]
        else:
            infos = [await redis.info("server")]
    except ResponseError:
        return False
    return bool(infos) and all(_spublish_in(info) for info in infos)


async def ping(redis: Any, url: str, timeout: float) -> None:
    """Fail fast, naming the (masked) URL, when the server cannot be reached."""
    try:
        # A server that accepts connections but never answers must not hang the caller.
        with anyio.fail_after(timeout):
            await redis.ping()
    except TimeoutError:
        raise ConnectionFailed(
            f"cannot reach Redis at {mask_url(url)}: no answer within {timeout:g}s"
        ) from None
    except RedisClusterException as exc:
        if "not enabled" in str(exc).lower():
            raise ConfigurationError(
                f"{mask_url(url)} is not a Redis Cluster node, but cluster mode was asked for: "
                "pass cluster=False (or leave it None to detect)"
            ) from None
        raise ConnectionFailed(f"cannot reach the Redis Cluster at {mask_url(url)}: {exc}") from None
    except (RedisError, OSError) as exc:
        raise ConnectionFailed(f"cannot reach Redis at {mask_url(url)}: {exc}") from None


async def close(redis: Any) -> None:
    """Close the client and its pool (the pool was made for it, see :func:`connect`)."""
    await redis.aclose()
