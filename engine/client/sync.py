"""Sync callers: ``task.enqueue_sync(...)``, ``job.result_sync()`` from code with no event loop.

Most Python web apps are sync (Django, Flask, scripts, Celery-style callers). An asyncio
client's connections belong to the loop that opened them, so ``asyncio.run(task.enqueue())``
per request fails on the second call ("Event loop is closed"), and one loop per thread costs a
connection pool per thread. Instead each process runs one background event loop in a daemon
thread (the :class:`Portal`), and every sync call of every thread is run there on the app's
*twin*: a copy of the Engine that shares its settings, tasks and layout and holds its own
connections, in that loop. So all threads share one pool and concurrent single enqueues are
coalesced into one round trip as they are for async callers.

After a fork the child gets a fresh portal and fresh twins (the parent's thread and sockets
are not the child's). A sync call from a thread that runs an event loop is refused: it would
block that loop; ``await`` the async method there instead.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")

CLOSE_TIMEOUT_S = 2.0


class Portal:
    """One event loop in a daemon thread, for the sync callers of one process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.thread = threading.Thread(target=self._serve, args=(ready,), name="engine-sync", daemon=True)
        self.thread.start()
        ready.wait()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def call(self, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``make()`` on the portal's loop and wait for its result in this thread."""
        if threading.current_thread() is self.thread:
            raise RuntimeError("a sync engine call cannot run on the engine's own background loop")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "a *_sync engine call was made from async code (this thread runs an event loop, "
                "which it would block): await the async method instead, e.g. "
                "`await task.enqueue(...)` or `await job.result()`"
            )

        async def run() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"the engine call did not finish within {timeout}s") from None

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer()`` on the loop when the process exits (closing a twin's connections)."""
        self._closers.append(closer)

    def close(self) -> None:
        if os.getpid() != self.pid or not self.thread.is_alive():
            return

        async def close_all() -> None:
            for closer in self._closers:
                with contextlib.suppress(Exception):
                    await closer()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(CLOSE_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)


_lock = threading.Lock()
_portal: Portal | None = None


def portal() -> Portal:
    """This process's portal (started on first use; a forked child starts its own)."""
    global _portal
    with _lock:
        if _portal is None or _portal.pid != os.getpid():
            _portal = Portal()
            atexit.register(_portal.close)
        return _portal


def call(make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
    """Run ``make()`` on this process's portal loop, from any thread with no running loop."""
    return portal().call(make, timeout)


class Twins:
    """The per-process twin of an object made for the portal's loop (an Engine's, here)."""

    def __init__(self, make: Callable[[], Any], close: Callable[[Any], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._twin: Any = None

    def get(self) -> Any:
        with self._lock:
            if self._twin is None or self._pid != os.getpid():
                twin = self._make()
                self._twin, self._pid = twin, os.getpid()
                portal().on_close(lambda: self._close(twin))
            return self._twin
