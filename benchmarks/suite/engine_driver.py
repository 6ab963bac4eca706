"""The engine itself, driven like every peer: ``task.enqueue`` / ``task.enqueue_many`` in the
benchmark process, ``python -m engine.worker benchmarks.suite.engine_app:app`` as the worker.

Settings: ``--concurrency N`` (100 unless the scenario says otherwise), ``--no-cron``,
``--log-level warning``; everything else is the engine's default (result_ttl 24 h, batched
outcome commits, visibility timeout 30 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.suite.driver import Driver, Kind, WorkerCommand, python


class EngineDriver(Driver):
    name = "engine"
    distribution = "engine"
    bulk_api = "task.enqueue_many"
    settings = {
        "worker": "python -m engine.worker benchmarks.suite.engine_app:app --concurrency N --no-cron",
        "log level": "warning",
        "results": "kept 24 h (engine default)",
        "retry delay": "Backoff(initial=0): at once",
    }

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from benchmarks.suite import engine_app

        self.app = engine_app.app
        self.tasks = {
            "noop": engine_app.noop,
            "io": engine_app.io,
            "flaky": engine_app.flaky,
            "latency": engine_app.latency,
        }

    async def open(self) -> None:
        await self.app.connect()

    async def close(self) -> None:
        await self.app.close()

    async def enqueue_one(self, kind: Kind, arg: Any) -> None:
        await self.tasks[kind].enqueue(arg)

    async def enqueue_bulk(self, kind: Kind, args: Sequence[Any]) -> None:
        await self.tasks[kind].enqueue_many([(a,) for a in args])

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [python(), "-m", "engine.worker", "benchmarks.suite.engine_app:app"]
        argv += ["--concurrency", str(concurrency), "--no-cron", "--log-level", "warning"]
        return WorkerCommand(argv, {"BENCH_REDIS_URL": self.url, "ENGINE_REDIS_URL": self.url})
