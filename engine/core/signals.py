"""Test signals: named points in the engine's run that a test can wait on instead of sleeping.

Each :class:`Engine` carries one :class:`Signals`; the scheduler, reclaimer, shipper and
worker emit into it as they go (River's ``testsignal``). Emitting costs a counter bump and
a list check, so they stay on in production. They work within one process: a test that
runs the worker in a subprocess still polls Redis with a deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class Signal:
    """A counter of how often one thing happened, with its latest values and waiters."""

    __slots__ = ("_waiters", "count", "name", "values")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.values: deque[Any] = deque(maxlen=100)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"<Signal {self.name} count={self.count}>"

    @property
    def last(self) -> Any:
        return self.values[-1] if self.values else None

    def emit(self, value: Any = None) -> None:
        self.count += 1
        self.values.append(value)
        if self._waiters:
            keep = []
            for target, future in self._waiters:
                if future.done():
                    continue
                if self.count >= target:
                    future.set_result(None)
                else:
                    keep.append((target, future))
            self._waiters = keep

    async def wait(self, count: int | None = None, *, timeout_s: float = 30.0) -> Any:
        """Wait until the signal has fired ``count`` times in all (default: once more
        than now) and return the latest value; TimeoutError names the signal."""
        target = self.count + 1 if count is None else count
        if self.count < target:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((target, future))
            try:
                await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                raise TimeoutError(
                    f"signal {self.name!r} fired {self.count} times, not {target}, within {timeout_s} s"
                ) from None
        return self.last


class Signals:
    """The engine's signals, one attribute each."""

    def __init__(self) -> None:
        self.scheduler_elected = Signal("scheduler_elected")  # value: the queue it leads
        self.scheduler_fired = Signal("scheduler_fired")  # value: (schedule name, tick datetime)
        self.reclaimer_reclaimed = Signal("reclaimer_reclaimed")  # value: jobs reclaimed this pass
        self.shipper_committed = Signal("shipper_committed")  # value: events written in this batch
        self.worker_drained = Signal("worker_drained")  # value: the worker's id

    def __repr__(self) -> str:
        fired = ", ".join(f"{s.name}={s.count}" for s in vars(self).values() if isinstance(s, Signal))
        return f"<Signals {fired}>"
