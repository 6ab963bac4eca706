"""User code as a type checker sees it (checked by test_typed_tasks.py with mypy --strict).

Each line marked ``# E: code`` must be reported with that error code; each ``reveal_type``
must show the type in its ``# R:`` comment; nothing else may be reported. Never run."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import reveal_type

from engine import Engine, JobContext

app = Engine()


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(queue="sums", max_attempts=3)
def sync_add(a: int, b: int = 2) -> int:
    return a + b


@app.task
async def charge(ctx: JobContext, amount: Decimal, when: datetime) -> str:
    return f"{ctx.job_id} {amount} {when}"


@app.task(name="report")
def report(ctx: JobContext, ids: list[int]) -> dict[str, int]:
    return {str(i): i for i in ids}


@app.cron("0 * * * *", name="hourly")
async def hourly(ctx: JobContext) -> None:
    return None


async def main() -> None:
    job = await add.enqueue(1, 2)
    reveal_type(job)  # R: engine.client.handle.Job[int]
    reveal_type(await job.result())  # R: int
    await add.enqueue("x", 2)  # E: arg-type
    await add.enqueue(1)  # E: call-arg
    await add.enqueue(1, 2, 3)  # E: call-arg
    await add.enqueue(1, c=3)  # E: call-arg
    await add.with_options(delay=1).enqueue(1, "2")  # E: arg-type
    reveal_type(await (await sync_add.enqueue(1)).result())  # R: int
    await sync_add.enqueue(b=1)  # E: call-arg
    await charge.enqueue(Decimal("9.99"), datetime.now())
    await charge.enqueue(9.99, "now")  # E: arg-type
    reveal_type(await (await charge.enqueue(Decimal(1), datetime.now())).result())  # R: str
    reveal_type(await (await report.enqueue([1, 2])).result())  # R: dict[str, int]
    await report.enqueue(["a"])  # E: list-item
    await hourly.enqueue()
    await hourly.enqueue(1)  # E: call-arg


def from_sync_code() -> None:
    job = add.enqueue_sync(1, 2)
    reveal_type(job)  # R: engine.client.handle.Job[int]
    reveal_type(job.result_sync(timeout=5))  # R: int
    add.enqueue_sync(1, "2")  # E: arg-type
    charge.with_options(delay=5).enqueue_sync(Decimal(1))  # E: call-arg
