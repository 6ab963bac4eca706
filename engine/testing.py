"""Helpers for testing code that uses the engine (and for the engine's own tests): a
worker in the background, a clock to drive by hand, and the signals to wait on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from engine.core.clock import Clock, FakeClock, SystemClock
from engine.core.signals import Signal, Signals

__all__ = ["Clock", "FakeClock", "Signal", "Signals", "SystemClock", "worker_running"]

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
