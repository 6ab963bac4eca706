"""Running the scripts: a typed :class:`Call` per script call, and one client's loaded scripts.

The functions of :mod:`engine.broker.scripts.bindings` build the calls; :class:`Scripts`
sends one, or many in one pipelined round trip, and decodes each reply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redis.exceptions import NoScriptError, ResponseError

from engine.broker.scripts import NAMES, source

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One call of the script ``script`` (a ``.lua`` file's name), ready to send; ``decode``
    turns its reply into a typed value (and raises on a code that is an error)."""

    script: str
    keys: list[str]
    args: list[Any]
    decode: Callable[[Any], T]


class Lua:
    """One script, called by SHA on the client it is given (a gateway's client may switch to
    a cluster client at connect, so no script is bound to one). A server that lost it (a
    restart, a failover to a replica, SCRIPT FLUSH) gets it by EVAL, which caches it there:
    the NOSCRIPT call did nothing, so nothing runs twice."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, redis: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)


class Scripts:
    """The engine's scripts for one client (called by SHA)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._scripts: dict[str, Lua] = {name: Lua(source(name)) for name in NAMES}

    def script(self, name: str) -> Lua:
        """The :class:`Lua` of a script, for :func:`run_scripts`."""
        return self._scripts[name]

    async def run(self, call: Call[T]) -> T:
        return call.decode(await self._scripts[call.script](self.redis, call.keys, call.args))

    async def run_many(self, calls: Sequence[Call[T]]) -> list[T]:
        """Several calls in one pipelined round trip (:func:`run_scripts`); replies in order."""
        if not calls:
            return []
        replies = await run_scripts(self.redis, [(self._scripts[c.script], c.keys, c.args) for c in calls])
        return [call.decode(reply) for call, reply in zip(calls, replies, strict=True)]


async def run_scripts(
    redis: Any,
    calls: Sequence[tuple[Lua, Sequence[str], Sequence[Any]]],
    more: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Run scripts, each with its (keys, args), in one pipelined round trip,
    then whatever ``more`` adds to the pipeline; the replies in order.

    redis-py's pipelines check every script with SCRIPT EXISTS first: a second round trip
    on the hot path. Instead send EVALSHA straight away and, in the rare case the server
    lost its scripts (a restart or SCRIPT FLUSH), rerun just the refused calls, which load
    the script (a NOSCRIPT call did nothing, so nothing runs twice). Replies of ``more``'s
    commands are returned as they are, errors included.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            # As a raw command: a cluster pipeline refuses its evalsha() method, and routes
            # the raw one by its keys (every script's keys share one slot).
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        if more is not None:
            more(pipe)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for i, (script, keys, args) in enumerate(calls):
        if isinstance(replies[i], NoScriptError):
            replies[i] = await script(redis, keys, args)
        elif isinstance(replies[i], Exception):
            raise replies[i]
    return replies


# Errors a script meets because the server cannot take writes now (a failover, memory
# full, loading): these pass, unlike an error in the script's own work on some data.
_TRANSIENT = ("READONLY", "OOM", "BUSY", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN")


def script_failed(exc: ResponseError) -> bool:
    """Whether ``exc`` is a script that failed on its data (Redis names the script in the
    message), rather than a server that refused to run it for now."""
    message = str(exc)
    return " script: " in message and not message.startswith(_TRANSIENT)
