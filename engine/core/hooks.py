"""What an app runs around its jobs: start-up and shut-down hooks with their shared state,
middleware around every attempt, failure hooks, and enqueue hooks that fill a job's ``meta``.

The app registers them (``@app.on_startup``, ``app.add_middleware``...); the worker, the
executor and the producer run them. Kept here, below all three, as plain lists.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.core.errors import ConfigurationError

Middleware = Callable[[Any, Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""``async def fn(ctx, call_next)``: wraps one attempt; returns (or raises) what it does."""


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@dataclass
class Hooks:
    startup: list[Callable[[dict[str, Any]], Any]] = field(default_factory=list)
    shutdown: list[Callable[[dict[str, Any]], Any]] = field(default_factory=list)
    middleware: list[Middleware] = field(default_factory=list)
    failure: list[Callable[[Any, BaseException], Any]] = field(default_factory=list)
    """Called with (ctx, exception) when an attempt raises (retried or not)."""
    enqueue: list[Callable[[str, dict[str, Any]], Any]] = field(default_factory=list)
    """Called with (task name, the job's meta) before a job is built; may add to the meta."""
    state: dict[str, Any] = field(default_factory=dict)
    """The per-process state the start-up hooks fill (``ctx.state``)."""
    started: int = 0  # workers of this process that ran the start-up hooks and still run

    def add(self, kind: str, fn: Any) -> None:
        if not callable(fn):
            raise ConfigurationError(f"{kind} hook must be a function, not {fn!r}")
        if kind == "middleware" and not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(
                f"middleware must be an async function `async def fn(ctx, call_next)`, not {fn!r}"
            )
        getattr(self, kind).append(fn)

    async def start(self) -> None:
        """Run the start-up hooks once per process (the first worker to start runs them)."""
        if self.started == 0:
            for fn in self.startup:
                await maybe_await(fn(self.state))
        self.started += 1  # only once they succeeded: a worker that failed here never stops

    async def stop(self) -> list[tuple[str, Exception]]:
        """Run the shut-down hooks once the last worker of the process stops, each even if
        another raised; returns (hook, exception) of those that did, for the caller to log."""
        self.started -= 1
        if self.started != 0:
            return []
        return [failure for fn in reversed(self.shutdown) if (failure := await _run(fn, self.state))]

    async def failed(self, ctx: Any, exc: BaseException) -> list[tuple[str, Exception]]:
        """Run the failure hooks; a broken one must not change the job's outcome: returns
        (hook, exception) of those that raised, for the caller to log."""
        return [failure for fn in self.failure if (failure := await _run(fn, ctx, exc))]


async def _run(fn: Callable[..., Any], *args: Any) -> tuple[str, Exception] | None:
    try:
        await maybe_await(fn(*args))
    except Exception as exc:
        return getattr(fn, "__qualname__", repr(fn)), exc
    return None
