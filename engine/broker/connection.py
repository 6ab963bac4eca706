"""The Redis client: URL checks, masked URLs, the pooled client factory, ping and close."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from engine.broker.pool import WaitingConnectionPool
from engine.core.errors import ConfigurationError, ConnectionFailed

REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")

# How long a command waits for a free pooled connection before giving up.
POOL_WAIT_S = 60.0


def mask_url(url: str) -> str:
    """The URL with its password replaced (in the user info and in a ``?password=``
    parameter), fit for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.query:
        query = [
            (name, "***" if name.lower() == "password" else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
    return urlunsplit(parts)


def check_redis_url(url: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("Redis URL is empty: pass redis_url= or set ENGINE_REDIS_URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric port
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {mask_url(url)!r}: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            f"invalid Redis URL {mask_url(url)!r}: it must start with redis://, rediss:// "
            "or unix:// (for example redis://localhost:6379/0)"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigurationError(f"invalid Redis URL {mask_url(url)!r}: no host name")
    return url


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
