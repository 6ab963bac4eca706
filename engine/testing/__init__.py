"""Helpers for testing code that uses the engine (and for the engine's own tests).

- :func:`worker_running`: a worker in the background for the duration of a block;
- inline mode (``Engine(testing="inline")``, or :func:`inline_mode` for an app that exists):
  ``enqueue`` runs the job at once in the caller's event loop, with no Redis
  (:mod:`engine.testing.inline`); :func:`inline_jobs` lists what ran;
- a clock to drive by hand (:class:`FakeClock`) and the signals to wait on (:class:`Signals`);
- the pytest plugin (:mod:`engine.testing.plugin`, loaded by the ``pytest11`` entry point):
  the fixtures ``engine_redis_url``, ``engine_namespace``, ``engine_app_factory``,
  ``engine_app``, ``engine_worker`` and ``engine_inline_app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from engine.core.clock import Clock, FakeClock, SystemClock
from engine.core.signals import Signal, Signals
from engine.testing.inline import inline_jobs, inline_mode

__all__ = [
    "Clock",
    "FakeClock",
    "Signal",
    "Signals",
    "SystemClock",
    "inline_jobs",
    "inline_mode",
    "worker_running",
]

if TYPE_CHECKING:
    from engine.client.app import Engine
    from engine.worker import Worker


@asynccontextmanager
async def worker_running(engine: Engine, **options: Any) -> AsyncIterator[Worker]:
    """Run a worker in the background for the duration of the block.

    On exit the worker is stopped gracefully and the block waits for it to finish.
    """
    options.setdefault("handle_signals", False)
    worker = engine.worker(**options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await worker.started.wait()
        try:
            yield worker
        finally:
            worker.stop()
