"""Arguments and results converted by the task's annotations: datetimes, decimals, UUIDs,
enums, structs and containers arrive as themselves; a value that does not fit is refused at
enqueue (naming the parameter), by a producer without the code too; one that slipped past
(an older producer) dead-letters its job, and the worker goes on."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypedDict

import msgspec
import pytest

from engine import Engine, JobContext, JobFailed
from engine.producer import Options
from engine.testing import worker_running
from tests.helpers import eventually, task_announced


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Order(msgspec.Struct):
    sku: str
    quantity: int


class Address(TypedDict):
    city: str


def register(app: Engine, seen: list[Any]) -> Any:
    @app.task(name="typed")
    async def typed(
        ctx: JobContext,
        when: datetime,
        amount: Decimal,
        ids: list[int],
        *,
        uid: uuid.UUID,
        color: Color,
        point: Point,
        order: Order,
        address: Address,
        day: date | None = None,
        wait: timedelta = timedelta(0),
    ) -> datetime:
        seen.append((when, amount, ids, uid, color, point, order, address, day, wait))
        return when + timedelta(days=1)

    return typed


async def test_typed_arguments_arrive_as_their_types_and_results_come_back_typed(app: Engine) -> None:
    seen: list[Any] = []
    typed = register(app, seen)
    when = datetime(2026, 12, 2, 8, 30, tzinfo=UTC)
    uid = uuid.uuid4()
    async with worker_running(app, concurrency=2):
        job = await typed.enqueue(
            when,
            Decimal("19.99"),
            [1, 2],
            uid=uid,
            color=Color.BLUE,
            point=Point(1, 2),
            order=Order("A-1", 3),
            address={"city": "Bandung"},
            day=date(2026, 12, 1),
            wait=timedelta(seconds=5),
        )
        result = await job.result(timeout=10)
    assert result == when + timedelta(days=1) and isinstance(result, datetime)
    (got,) = seen
    assert got == (
        when,
        Decimal("19.99"),
        [1, 2],
        uid,
        Color.BLUE,
        Point(1, 2),
        Order("A-1", 3),
        {"city": "Bandung"},
        date(2026, 12, 1),
        timedelta(seconds=5),
    )
    assert [type(v) for v in got[:7]] == [datetime, Decimal, list, uuid.UUID, Color, Point, Order]
    # A handle made from the id alone has no types: the result is the JSON value.
    assert await app.job(job.id).result(timeout=5) == "2026-12-03T08:30:00Z"


async def test_a_value_that_does_not_fit_is_refused_at_enqueue_naming_the_parameter(app: Engine) -> None:
    @app.task
    async def add(a: int, b: int = 0, *rest: float, **extra: str) -> int:
        return a + b

    good = {"uid": uuid.uuid4(), "color": Color.RED, "point": Point(0, 0), "order": Order("x", 1)}
    typed = register(app, [])
    with pytest.raises(TypeError, match=r"task 'add': argument 'a' must be int, not str 'x'"):
        await add.enqueue("x")
    with pytest.raises(TypeError, match=r"argument 'b' must be int, not bool True"):
        await add.enqueue(1, b=True)
    with pytest.raises(TypeError, match=r"argument 'rest' must be float, not str"):
        await add.enqueue(1, 2, 3.5, "four")
    with pytest.raises(TypeError, match=r"argument 'extra' must be str, not int 5"):
        await add.enqueue(1, note=5)
    with pytest.raises(TypeError, match=r"argument 'amount' must be Decimal, not list"):
        await typed.enqueue(datetime.now(UTC), [1], [1], address={"city": "x"}, **good)
    with pytest.raises(TypeError, match=r"argument 'color' must be Color, not str 'green'"):
        await typed.enqueue(
            datetime.now(UTC), Decimal(1), [], address={"city": "x"}, **{**good, "color": "green"}
        )
    with pytest.raises(TypeError, match=r"argument 'address' must be Address"):
        await typed.enqueue(datetime.now(UTC), Decimal(1), [], address={"town": "x"}, **good)
    # What does fit goes in: JSON-shaped values of the annotated types, too.
    await add.enqueue(1, 2, 3, 4.5, note="ok")
    await typed.enqueue(
        "2026-12-02T08:30:00Z",
        "1.5",
        [1],
        address={"city": "x"},
        **{**good, "color": "red", "point": {"x": 1, "y": 2}},
    )
    stats = await app.stats()
    assert stats["default"]["enqueued"] == 2  # nothing refused was written


async def test_a_producer_without_the_code_checks_against_the_announced_types(
    app: Engine, redis_url: str, namespace: str
) -> None:
    typed = register(app, [])
    del typed
    async with worker_running(app, concurrency=2):
        await eventually(lambda: task_announced(app, "typed"))
        producer = Engine(redis_url, namespace=namespace)
        try:
            call = producer.with_options("typed")
            # The keyword arguments as a producer without the classes sends them: JSON values.
            as_json: dict[str, Any] = {
                "uid": str(uuid.uuid4()),
                "color": "red",
                "point": {"x": 1, "y": 2},
                "order": {"sku": "a", "quantity": 1},
                "address": {"city": "c"},
            }
            with pytest.raises(TypeError, match=r"argument 'ids' must be list\[int\], not list \['a'\]"):
                await call.enqueue(
                    "2026-12-02T08:30:00Z",
                    "1",
                    ["a"],
                    **as_json,
                )
            with pytest.raises(TypeError, match=r"argument 'when' must be datetime"):
                await call.enqueue(
                    "yesterday",
                    "1",
                    [1],
                    **as_json,
                )
            job = await call.enqueue(
                "2026-12-02T08:30:00Z",
                "1",
                [1],
                **as_json,
            )
            assert await job.result(timeout=10) == "2026-12-03T08:30:00Z"
        finally:
            await producer.close()


async def test_arguments_that_slipped_past_the_checks_dead_letter_the_job_and_the_worker_goes_on(
    app: Engine,
) -> None:
    @app.task(max_attempts=3)
    async def square(n: int) -> int:
        return n * n

    # An older producer (no checks) sent a string: bypass the checks the way it would.
    unchecked = type(square.spec)(
        name="square", queue="default", timeout=5.0, max_attempts=3, backoff=square.spec.backoff
    )
    (bad,) = await app._enqueue(unchecked, [(("three",), {})], Options())
    async with worker_running(app, concurrency=2):
        with pytest.raises(JobFailed):
            await bad.result(timeout=10)
        assert await (await square.enqueue(4)).result(timeout=10) == 16
    info = await bad.info()
    assert info is not None and info.attempts == 1
    assert (
        info.error is not None
        and "PayloadError: task 'square': argument 'n' must be int, not str" in info.error
    )
