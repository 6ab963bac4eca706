"""Unit tests of the shop's jobs in inline mode: no Redis, no worker."""

from __future__ import annotations

from decimal import Decimal

import pytest
import shop

from engine import ConfigurationError, Engine, JobFailed, Status, UnrecoverableError
from engine.testing import inline_jobs


async def test_an_order_is_charged_then_a_receipt_sent(engine_inline_app: Engine) -> None:
    job_id = await shop.place_order(7, Decimal("19.90"))
    charge = engine_inline_app.job(job_id)  # by id alone, as a status endpoint would
    assert await charge.result() == "charged:7:19.90"
    info = await charge.info()
    assert info is not None
    assert (info.status, info.attempts, info.progress, info.worker) == (Status.COMPLETED, 2, 1.0, "inline")
    assert shop.attempts_seen == [1, 2]  # retried at once, the backoff not slept
    assert info.error == "ConnectionError: the payment provider timed out"  # the failed attempt's
    [receipt] = inline_jobs(engine_inline_app, task="send_receipt")
    assert await receipt.result() == "sent:7"
    lines = await receipt.logs()
    assert [line["message"] for line in lines] == ["receipt for order 7 to order-7@example.com"]
    assert shop.mailed == ["order-7@example.com"]  # through ctx.state, filled by @app.on_startup


async def test_the_same_order_is_charged_once(engine_inline_app: Engine) -> None:
    first = await shop.place_order(8, Decimal("5"))
    assert await shop.place_order(8, Decimal("5")) == first
    assert len(inline_jobs(engine_inline_app, task="charge")) == 1
    assert shop.attempts_seen == [1, 2]


async def test_a_failure_shows_through_the_handle(engine_inline_app: Engine) -> None:
    job = await shop.send_receipt.enqueue(9, "nobody")  # enqueue itself does not raise
    with pytest.raises(JobFailed, match="not an email address") as failed:
        await job.result()
    assert isinstance(failed.value.__cause__, UnrecoverableError)  # the task's own exception
    info = await job.info()
    assert info is not None and info.status == Status.FAILED and info.attempts == 1
    assert info.traceback and "UnrecoverableError" in info.traceback


async def test_arguments_are_checked_at_enqueue(engine_inline_app: Engine) -> None:
    with pytest.raises(TypeError, match="amount"):
        await shop.charge.enqueue(1, "not a number")
    assert inline_jobs(engine_inline_app) == []


async def test_a_plain_def_task_and_the_lifespan(engine_inline_app: Engine) -> None:
    async with engine_inline_app:  # a lifespan's `async with app:` connects to nothing
        job = await shop.checksum.enqueue("abc")
        assert await job.result() == 294
    with pytest.raises(ConfigurationError, match="no worker"):
        engine_inline_app.worker()


async def test_a_fresh_inline_app_each_test(engine_inline_app: Engine) -> None:
    assert inline_jobs(engine_inline_app) == []  # the previous tests' jobs are forgotten
