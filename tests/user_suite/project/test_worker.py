"""Integration tests of the shop's jobs on a real Valkey, run by a real worker."""

from __future__ import annotations

from decimal import Decimal

import shop

from engine import Engine, JobContext, Status, Worker
from engine.testing import worker_running
from engine.testing.plugin import AppFactory

namespaces: list[str] = []


async def test_the_worker_charges_an_order(engine_app: Engine, engine_worker: Worker) -> None:
    assert engine_app is shop.app and engine_worker.engine is shop.app
    namespaces.append(engine_app.namespace)
    job_id = await shop.place_order(1, Decimal("12.50"))
    charge = engine_app.job(job_id)
    assert await charge.result(timeout=30) == "charged:1:12.50"  # after a real retry
    info = await charge.info()
    assert info is not None and info.status == Status.COMPLETED and info.attempts == 2
    stats = await engine_app.stats()
    assert stats["payments"]["completed"] == 1
    assert await engine_app.job("receipt-1").result(timeout=30) == "sent:1"  # enqueued by the charge
    assert shop.mailed == ["order-1@example.com"]  # through ctx.state, filled by @app.on_startup


async def test_each_test_has_a_fresh_namespace(engine_app: Engine, engine_namespace: str) -> None:
    assert engine_app.namespace == engine_namespace not in namespaces
    stats = await engine_app.stats()
    assert all(counts["completed"] == 0 for counts in stats.values())


async def test_an_app_of_the_tests_own(engine_app_factory: AppFactory, engine_redis_url: str) -> None:
    app = await engine_app_factory()
    assert app.redis_url == engine_redis_url

    @app.task(timeout=5)
    async def double(ctx: JobContext, x: int) -> int:
        return 2 * x

    async with worker_running(app):
        assert await (await double.enqueue(21)).result(timeout=10) == 42
