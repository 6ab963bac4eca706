"""The Redis client: the pooled client factory, ping and close (URL checks: ``core/urls.py``)."""

from __future__ import annotations

from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from engine.broker.pool import WaitingConnectionPool
from engine.core.errors import ConnectionFailed
from engine.core.urls import check_redis_url, mask_url

# How long a command waits for a free pooled connection before giving up.
POOL_WAIT_S = 60.0


def connect(url: str, *, connect_timeout: float = 5.0, max_connections: int = 100) -> Any:
    """A client on a pool of its own (connections are opened on first use, not here).

    redis-py's type hints are unions of bytes/str that fight decode_responses=True; the
    broker is the one place that talks to it, so the client is typed loosely (``Any``).
    """
    # Waits for a free connection past max_connections instead of failing (engine.broker.pool).
    pool = WaitingConnectionPool.from_url(
        check_redis_url(url),
        max_connections=max_connections,
        wait_timeout=POOL_WAIT_S,
        decode_responses=True,
        # Replies are text, and any bytes decode: a stream entry or hash written by
        # someone else with bytes that are not UTF-8 arrives with them escaped ("\xff")
        # instead of raising UnicodeDecodeError out of whatever read it (a worker's
        # fetch, the reclaimer, a DLQ listing). What the engine writes is always UTF-8,
        # so its own data is unaffected.
        encoding_errors="backslashreplace",
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        health_check_interval=30,
        # Ride out a dropped connection or a quick restart (about 1.5 s at most), then
        # let the caller see the error; the worker's loops add their own backoff.
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5),
    )
    return aioredis.Redis.from_pool(pool)


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
    except (RedisError, OSError) as exc:
        raise ConnectionFailed(f"cannot reach Redis at {mask_url(url)}: {exc}") from None


async def close(redis: Any) -> None:
    """Close the client and its pool (the pool was made for it, see :func:`connect`)."""
    await redis.aclose()
