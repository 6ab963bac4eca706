"""Partitioned queues on real servers: one queue as K sub-queues spread over the masters of a
cluster, with exact idempotency, merged stats, dead letters and dashboard figures, cron into
one partition, and clear errors when producers and workers disagree on K."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from engine import Backoff, ConfigurationError, Engine
from engine.core.partitions import partition_names
from engine.embedded import EmbeddedCluster
from engine.testing import worker_running
from tests.helpers import eventually

FAST = Backoff(initial=0.05, factor=2.0, max=0.2, jitter=0.0)


def declare(app: Engine, partitions: int = 6) -> list[str]:
    app.queue("events", partitions=partitions)
    return list(app.layout.partitions("events"))


async def test_six_partitions_on_three_masters(cluster: Any, cluster_url: str, namespace: str) -> None:
    if not isinstance(cluster, EmbeddedCluster):
        pytest.skip("needs the embedded cluster, to know which master holds which slot")
    app = Engine(cluster_url, namespace=namespace)
    names = declare(app)
    seen: list[int] = []

    @app.task(queue="events")
    async def record(n: int) -> int:
        seen.append(n)
        return n

    async with app:
        assert app.gateway.cluster
        jobs = await record.enqueue_many(range(3000))
        single = [await record.enqueue(n) for n in range(3000, 3012)]
        assert len({j.queue for j in jobs}) == 3  # 3 chunks of 1000, round robin
        assert len({j.queue for j in single}) == 6
        masters = {cluster.master_of("{" + name + "}") for name in names}
        assert len(masters) == 3  # the partitions cover every master
        per_master: dict[Any, int] = {}
        for name in names:
            n = int(await app.gateway.redis.xlen(app.gateway.keys.queue(name).stream))
            master = cluster.master_of("{" + name + "}")
            per_master[master] = per_master.get(master, 0) + n
        assert len(per_master) == 3 and sum(per_master.values()) == 3012
        assert (await app.stats())["events"]["waiting"] == 3012

        async with worker_running(app, concurrency=50):
            await eventually(lambda: _at_least(seen, 3012), timeout=60)

            async def all_recorded() -> dict[str, Any] | None:
                # The last outcomes are recorded a batch after their jobs ran.
                stats = await app.stats()
                return stats if stats["events"]["completed"] >= 3012 else None

            stats = await eventually(all_recorded, timeout=10)
        assert sorted(seen) == list(range(3012)) and list(stats) == ["events"]
        assert stats["events"]["completed"] == 3012 and stats["events"]["waiting"] == 0
        assert await app.job(single[0].id).result(timeout=5) == 3000
        assert await app.job(jobs[5].id, "events").result(timeout=5) == 5
        partitions = await app.partition_stats("events")
        assert list(partitions) == names and sum(p["completed"] for p in partitions.values()) == 3012
    await app.close()


async def _at_least(items: list[int], n: int) -> bool:
    return len(items) >= n


@pytest.mark.cluster_too
async def test_an_idempotency_key_raced_by_twenty_producers_gives_one_job(
    redis_url: str, namespace: str
) -> None:
    producers = [Engine(redis_url, namespace=namespace) for _ in range(20)]
    for producer in producers:
        declare(producer)
        producer.task(queue="events", name="charge")(lambda order: order)
    ids: list[str] = []

    async def produce(producer: Engine) -> None:
        job = await producer.with_options("charge", idempotency_key="order-42").enqueue(42)
        ids.append(job.id)

    async with anyio.create_task_group() as group:
        for producer in producers:
            group.start_soon(produce, producer)
    assert len(ids) == 20 and len(set(ids)) == 1
    stats = await producers[0].stats()
    assert stats["events"]["enqueued"] == 1 and stats["events"]["waiting"] == 1
    # The same for explicit ids: "id taken" is exact because an id picks its partition.
    first = await producers[1].with_options("charge", job_id="job-7").enqueue(1)
    again = await producers[2].with_options("charge", job_id="job-7").enqueue(2)
    assert first.id == again.id == "job-7" and first.queue == again.queue
    assert (await producers[3].stats())["events"]["enqueued"] == 2
    for producer in producers:
        await producer.close()


@pytest.mark.cluster_too
async def test_dead_letters_merge_partitions_and_replay_in_place(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace, default_backoff=FAST)
    declare(app, 3)
    fail = True

    @app.task(queue="events", max_attempts=1)
    async def flaky(n: int) -> int:
        if fail:
            raise RuntimeError(f"boom {n}")
        return n

    async with app:
        jobs = [await flaky.enqueue(n) for n in range(9)]
        assert len({j.queue for j in jobs}) == 3
        async with worker_running(app, concurrency=10):
            await eventually(lambda: _dead_count_is(app, 9), timeout=20)
            dead = await app.dlq("events").list(limit=100)
            assert sorted(i.id for i in dead) == sorted(j.id for j in jobs)
            assert {i.queue for i in dead} == {"events"} and {i.partition for i in dead} == {
                j.queue for j in jobs
            }
            assert [i.finished_at for i in dead] == sorted((i.finished_at for i in dead), reverse=True)
            info = await app.job(jobs[0].id).info()
            assert info is not None and info.queue == "events" and info.partition == jobs[0].queue
            fail = False
            assert await app.dlq("events").replay(jobs[0].id) is True
            assert await jobs[0].result(timeout=10) == 0
            assert await app.dlq("events").replay_all() == 8
            assert [await j.result(timeout=10) for j in jobs] == list(range(9))
        assert await app.dlq("events").count() == 0
        assert (await app.stats())["events"]["completed"] == 9


async def _dead_count_is(app: Engine, n: int) -> bool:
    return await app.dlq("events").count() == n


@pytest.mark.cluster_too
async def test_cron_fires_each_schedule_into_one_fixed_partition(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)
    declare(app, 4)

    @app.cron("* * * * * *", name="tick", queue="events")
    async def tick() -> None:
        return None

    async with app:
        async with worker_running(app, concurrency=5) as worker:
            assert worker.scheduler is not None
            home = app.layout.route("events", "tick")
            assert list(worker.scheduler.by_queue) == [home]
            await eventually(lambda: _completed(app), timeout=10)
        partitions = await app.partition_stats("events")
        assert {name for name, s in partitions.items() if s["enqueued"]} == {home}


async def _completed(app: Engine) -> bool:
    return (await app.stats())["events"]["completed"] >= 1


async def test_producers_and_workers_that_disagree_on_the_count_are_refused(
    redis_url: str, namespace: str
) -> None:
    first, second, learner = (Engine(redis_url, namespace=namespace) for _ in range(3))
    declare(first, 4)
    declare(second, 3)
    for app in (first, second, learner):
        app.task(queue="events", name="work")(lambda: None)
    await first.enqueue("work")
    with pytest.raises(ConfigurationError, match=r"partitions=3 here, but Redis records 4"):
        await second.enqueue("work")
    with pytest.raises(ConfigurationError, match=r"partitions=3 here, but Redis records 4"):
        await second.worker().run()
    # A producer that does not declare it learns the count from Redis.
    job = await learner.enqueue("work")
    assert job.queue in partition_names("events", 4)
    assert (await learner.stats())["events"]["waiting"] == 2
    # A plain queue still holding jobs cannot become partitioned under them.
    plain = Engine(redis_url, namespace=namespace)
    plain.task(queue="orders", name="order")(lambda: None)
    await plain.enqueue("order")
    late = Engine(redis_url, namespace=namespace)
    late.queue("orders", partitions=2)
    with pytest.raises(ConfigurationError, match=r"'orders' holds 1 job\(s\) as an unpartitioned queue"):
        await late.connect() or await late.ready()
    with pytest.raises(ConfigurationError, match="partitions must be an integer from 1 to 256, not 0"):
        late.queue("other", partitions=0)
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        await learner.with_options("work", queue=job.queue).enqueue()
    for app in (first, second, learner, plain, late):
        await app.close()


@pytest.mark.cluster_too
async def test_the_dashboard_shows_a_partitioned_queue_once(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)
    names = declare(app, 3)
    app.task(queue="events", name="work")(lambda n: n)
    async with app:
        await app.with_options("work").enqueue_many(range(2500))
        for n in range(6):
            await app.enqueue("work", n)
        transport = httpx.ASGITransport(app=app.dashboard(metrics_public=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            queues = (await client.get("/api/queues")).json()["queues"]
            events = [q for q in queues if q["name"] == "events"]
            assert len(events) == 1 and [q["name"] for q in queues] == ["events"]
            total = events[0]["waiting"]
            detail = (await client.get("/api/queues/events")).json()
            assert [p["name"] for p in detail["partitions"]] == names
            assert sum(p["waiting"] for p in detail["partitions"]) == total == detail["waiting"]
            listing = (await client.get("/api/jobs", params={"queue": "events", "status": "waiting"})).json()
            assert listing["jobs"] and {j["queue"] for j in listing["jobs"]} == {"events"}
            page = await client.get("/queues/events")
            assert page.status_code == 200 and "3 partitions" in page.text
            metrics = (await client.get("/metrics")).text
            assert f'engine_queue_depth{{queue="events"}} {total}' in metrics
