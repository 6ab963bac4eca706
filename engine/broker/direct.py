"""Direct connections for the two calls where a round trip is what a job waits on: the
producer's single enqueue and an idle worker's blocking read. RESP over an asyncio protocol
with hiredis, without redis-py's connection stack.

A round trip through redis-py's asyncio client costs the caller about 120 us of CPU here
(its pool, StreamReader, timeouts and callbacks), through a bare protocol about 50: for an
``await task.enqueue()`` that is most of what it spends, and for a job enqueued to an idle
worker, a part of the time until it starts. Only those two calls take this path;
everything else, and those too whenever the direct connection cannot serve them (not a
plain TCP server, another event loop than the one it was opened on, a connection that
failed, a blocking read already in flight), goes through redis-py as before.

Replies come back in the order the commands were written (RESP), so calls share the one
connection: a call whose caller was cancelled still has its reply read, and dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.broker.scripts.runner import Lua

# After a failed connect, the direct path is not tried again for this long (redis-py's
# retries take the calls meanwhile).
RETRY_AFTER_S = 1.0
# A connection idle this long is checked with a PING before its next call (as redis-py's
# pool does): a peer or a middlebox may have dropped it without a word.
HEALTH_CHECK_S = 30.0


class _ReplyError(Exception):
    """An error reply, as hiredis hands it over (made into redis-py's exception after)."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        # The same text redis-py's clients give (decode_responses, backslashreplace).
        self.reader = hiredis.Reader(replyError=_ReplyError, encoding="utf-8", errors="backslashreplace")
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                done = self.waiting.popleft()
                if not done.done():  # its caller was cancelled: the reply is dropped
                    done.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            self._fail(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
            assert self.transport is not None
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        while self.waiting:
            done = self.waiting.popleft()
            if not done.done():
                done.set_exception(error)


class DirectConnection:
    """One connection to ``host``:``port`` opened on first use, on the event loop of that
    use; ``setup`` are the commands to send first (AUTH, SELECT, CLIENT SETNAME)."""

    def __init__(self, host: str, port: int, setup: Sequence[Sequence[Any]], timeout: float) -> None:
        self.host, self.port = host, port
        self.setup = [tuple(command) for command in setup]
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Future[None] | None = None
        self._failed_at = -RETRY_AFTER_S
        self._used_at = 0.0
        self._pid = os.getpid()
        self.calls = 0
        """Calls served by the direct connection (the others went through redis-py)."""

    async def run(self, script: Lua, redis: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply, as ``script(redis, keys, args)`` gives it."""

        def fallback() -> Awaitable[Any]:
            return script(redis, keys, args)

        try:
            return await self.request(("EVALSHA", script.sha, len(keys), *keys, *args), fallback)
        except NoScriptError:
            return await self.request(("EVAL", script.source, len(keys), *keys, *args), fallback)

    async def request(
        self,
        command: Sequence[Any],
        fallback: Callable[[], Awaitable[Any]],
        *,
        waits_s: float = 0.0,
        alone: bool = False,
    ) -> Any:
        """The reply to ``command`` (as hiredis reads it: text, lists, None; an error reply
        raised as redis-py raises it), or ``fallback()``'s when the direct connection cannot
        serve it. ``waits_s``: how long the server may hold the reply back (BLOCK), beyond the
        timeout; ``alone``: the command blocks the connection, so it is sent only when no
        other call is in flight (another goes through ``fallback``)."""
        protocol = await self._ready()
        if protocol is None or (alone and protocol.waiting):
            return await fallback()
        try:
            if time.monotonic() - self._used_at > HEALTH_CHECK_S:
                await self._call(protocol, ("PING",))
            reply = await self._call(protocol, command, self.timeout + waits_s)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            # Written, perhaps run: redis-py's own retry after a dropped connection sends it
            # again just the same.
            self._drop()
            return await fallback()
        self.calls += 1
        self._used_at = time.monotonic()
        return reply

    async def _call(self, protocol: _Protocol, command: Sequence[Any], timeout: float | None = None) -> Any:
        if protocol.closed or protocol.transport is None:
            raise RedisConnectionError("connection to Redis closed")
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.waiting.append(done)
        protocol.transport.write(hiredis.pack_command(tuple(command)))
        timeout = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                reply = await done
        except TimeoutError:
            raise RedisTimeoutError(f"no reply from Redis within {timeout:g} s") from None
        if isinstance(reply, _ReplyError):
            raise BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
        return reply

    async def _ready(self) -> _Protocol | None:
        """The open connection, opened now if need be; None when this call must go through
        redis-py (another event loop, or a recent failure to connect)."""
        loop = asyncio.get_running_loop()
        if (
            self._loop is not None
            and self._loop is not loop
            and (self._loop.is_closed() or self._pid != os.getpid())
        ):
            # Its event loop is gone (asyncio.run again, or a forked worker process): so is the
            # connection, for this process (a parent's socket is left to the parent).
            self._protocol, self._opening, self._loop = None, None, None
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol if loop is self._loop else None
        if time.monotonic() - self._failed_at < RETRY_AFTER_S:
            return None
        if self._opening is not None:
            if self._loop is not loop:
                return None
            await asyncio.shield(self._opening)
            return self._protocol if self._protocol is not None and not self._protocol.closed else None
        self._loop, self._opening, self._pid = loop, loop.create_future(), os.getpid()
        opened: _Protocol | None = None
        try:
            async with asyncio.timeout(self.timeout):
                transport, opened = await loop.create_connection(_Protocol, self.host, self.port)
                sock = transport.get_extra_info("socket")
                if sock is not None:  # as redis-py's connections (socket_keepalive)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                for command in self.setup:
                    await self._call(opened, command)
            self._protocol, opened = opened, None
            self._used_at = time.monotonic()
        except (RedisError, OSError, TimeoutError):
            self._failed_at = time.monotonic()
            return None
        finally:
            if opened is not None and opened.transport is not None:  # failed or cancelled
                opened.transport.abort()
            self._opening.set_result(None)
            self._opening = None
        return self._protocol

    def _drop(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is closed: nothing to do
                protocol.transport.abort()

    def close(self) -> None:
        self._drop()


def direct_connection(client: Any, client_name: str) -> DirectConnection | None:
    """A direct connection to the server of a standalone redis-py client on a plain TCP
    connection; None for anything else (TLS, a Unix socket, Sentinel, a cluster, a
    credential provider), which keeps redis-py's path."""
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {})
    kind = getattr(pool, "connection_class", None)
    if not (isinstance(kind, type) and issubclass(kind, Connection)) or issubclass(
        kind, SSLConnection | SentinelManagedConnection
    ):
        return None
    if "host" not in kwargs or kwargs.get("credential_provider") is not None:
        return None
    setup: list[list[Any]] = []
    if kwargs.get("password"):
        username = kwargs.get("username")
        setup.append(["AUTH", username, kwargs["password"]] if username else ["AUTH", kwargs["password"]])
    if int(kwargs.get("db") or 0):
        setup.append(["SELECT", int(kwargs["db"])])
    setup.append(["CLIENT", "SETNAME", client_name])
    timeout = kwargs.get("socket_timeout") or 5.0
    return DirectConnection(kwargs["host"], int(kwargs.get("port") or 6379), setup, float(timeout))
