"""What the runner needs from each system under test: a producer and a worker command.

A driver lives in the benchmark process: it enqueues through the system's own client API and
says how to start one worker process with the system's own worker CLI or API. The jobs are
the bodies in :mod:`benchmarks.suite.probe`, wrapped in each system's task API by the worker
app that sits beside the driver (``benchmarks/peers/<name>.py``, ``benchmarks/suite/engine_app.py``).

Task kinds: ``noop`` (the drain), ``io`` (awaits 10 ms), ``flaky`` (30% fail once and are
retried with the smallest delay the system allows), ``latency`` (argument: the wall-clock
time just before the enqueue call).
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread

ROOT = Path(__file__).resolve().parents[2]
Kind = Literal["noop", "io", "flaky", "latency"]
KINDS: tuple[Kind, ...] = ("noop", "io", "flaky", "latency")


@dataclass
class WorkerCommand:
    """One worker process: argv (run with cwd = the repository root) and extra environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


class Driver(abc.ABC):
    """Producer side of one system. Subclasses set the class attributes and implement the
    abstract methods; sync client libraries implement ``_enqueue_one_sync`` instead."""

    name: str = ""
    distribution: str = ""  # the PyPI name whose version is reported
    bulk_api: str | None = None  # the name of the system's own bulk enqueue API, if it has one
    # Settings used, as documented at the top of the module: shown in the report.
    settings: dict[str, str] = {}
    # How many jobs a worker process runs at once is fixed by its own model for some systems.
    concurrency_note: str = ""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def version(self) -> str:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return "?"

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Connect the producer (called once per driver, after the server is up)."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Disconnect the producer."""

    async def after_flush(self) -> None:  # noqa: B027 (optional hook)
        """Called after the runner flushed Redis (re-declare what the producer assumes)."""

    async def enqueue_one(self, kind: Kind, arg: Any) -> None:
        """Enqueue one job and wait until the system says it is stored."""
        self._enqueue_one_sync(kind, arg)

    def _enqueue_one_sync(self, kind: Kind, arg: Any) -> None:
        raise NotImplementedError

    @property
    def is_sync(self) -> bool:
        return type(self).enqueue_one is Driver.enqueue_one

    async def enqueue_in_flight(self, kind: Kind, args: Sequence[Any], in_flight: int) -> None:
        """``in_flight`` enqueue calls outstanding at a time: tasks on the event loop for async
        clients, a thread pool for sync ones (how each kind of application would do it)."""
        limiter = anyio.CapacityLimiter(in_flight)
        if self.is_sync:

            async def one_sync(arg: Any) -> None:
                await anyio.to_thread.run_sync(self._enqueue_one_sync, kind, arg, limiter=limiter)

            async with anyio.create_task_group() as tg:
                for arg in args:
                    tg.start_soon(one_sync, arg)
            return

        async def one(arg: Any) -> None:
            async with limiter:
                await self.enqueue_one(kind, arg)

        async with anyio.create_task_group() as tg:
            for arg in args:
                tg.start_soon(one, arg)

    async def enqueue_bulk(self, kind: Kind, args: Sequence[Any]) -> None:
        """The system's own bulk API (only called when ``bulk_api`` is set)."""
        raise NotImplementedError

    async def fill(self, kind: Kind, args: Sequence[Any]) -> None:
        """Put jobs in the queue as fast as the system allows (set-up, not measured)."""
        if self.bulk_api:
            for start in range(0, len(args), 10_000):
                await self.enqueue_bulk(kind, args[start : start + 10_000])
        else:
            await self.enqueue_in_flight(kind, args, 100)

    @abc.abstractmethod
    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        """How to start one worker process that runs ``kind`` jobs ``concurrency`` at a time."""


def python() -> str:
    return sys.executable


def bin_script(name: str) -> str:
    """A console script installed beside this interpreter (the peer's own CLI)."""
    return str(Path(sys.executable).parent / name)
