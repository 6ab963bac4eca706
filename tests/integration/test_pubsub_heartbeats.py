"""Per-queue sharded pub/sub and per-worker heartbeat keys.

The scripts publish on channels under their queue's hash tag (``{ns}:{q}:wake``, ``:cancel``,
``:done:<id>``) with SPUBLISH where the server has it, so a cluster never broadcasts them
over its bus (``cluster_stats_messages_publish_sent`` stays put on every node); wake-ups,
cancel requests and ``job.result()`` still arrive. Heartbeats are one expiring key per
worker plus a zset of last-seen times, swept by score.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from engine import Engine, JobContext, JobFailed
from engine.client import handle
from engine.core.model import Status
from engine.embedded import EmbeddedCluster, tags_on_distinct_masters
from engine.embedded.nodes import cluster_info, command
from engine.inspector.fleet import workers
from engine.testing import worker_running
from engine.worker import duties
from engine.worker.duties import Heartbeat
from tests.helpers import eventually

# Without these safety nets every notification must arrive by pub/sub, or the test times out.
NO_SAFETY_NET_S = 120.0


def _embedded(cluster: Any) -> EmbeddedCluster:
    if not isinstance(cluster, EmbeddedCluster):
        pytest.skip("needs the embedded cluster, to read CLUSTER INFO of every node")
    return cluster


def _bus_counters(cluster: EmbeddedCluster) -> dict[int, tuple[int, int]]:
    """Per node: cluster bus messages sent for PUBLISH, and for SPUBLISH (to replicas)."""
    out = {}
    for port in cluster.ports:
        info = cluster_info(port)
        out[port] = (
            int(info.get("cluster_stats_messages_publish_sent", 0)),
            int(info.get("cluster_stats_messages_publishshard_sent", 0)),
        )
    return out


async def _active(job: Any) -> bool:
    return await job.status() == Status.ACTIVE  # type: ignore[no-any-return]


async def test_a_cluster_drain_broadcasts_nothing_over_the_bus(
    cluster: Any, cluster_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded = _embedded(cluster)
    monkeypatch.setattr(handle, "RECHECK_INTERVAL_S", NO_SAFETY_NET_S)
    monkeypatch.setattr(duties, "PROMOTE_SAFETY_S", NO_SAFETY_NET_S)
    queues = tags_on_distinct_masters(embedded, 3)
    app = Engine(cluster_url, namespace=namespace)
    tasks = []
    for queue in queues:

        @app.task(name=f"echo_{queue}", queue=queue, timeout=10)
        async def echo(ctx: JobContext, n: int) -> int:
            return n

        tasks.append(echo)
    async with app:
        gateway = await app.ready()
        assert gateway.cluster and gateway.sharded is True
        before = _bus_counters(embedded)
        jobs = [job for task in tasks for job in await task.enqueue_many([(n,) for n in range(100)])]
        async with anyio.create_task_group() as waiting:
            results: dict[str, int] = {}
            all_in = anyio.Event()

            async def wait_for(job: Any) -> None:
                results[job.id] = await job.result(timeout=60)
                if len(results) == len(jobs):
                    all_in.set()

            for job in jobs:
                waiting.start_soon(wait_for, job)
            async with worker_running(app, concurrency=50) as worker:
                # The waiters hear of their job's end by pub/sub alone (no re-check for 120 s).
                with anyio.fail_after(60):
                    await all_in.wait()
                assert sorted(results.values()) == sorted(list(range(100)) * 3)

                # The listener holds the wake and cancel channels of each queue, on its master.
                for queue in queues:
                    qk = gateway.keys.queue(queue)
                    for channel in (qk.wake_channel, qk.cancel_channel):
                        port = embedded.master_of(channel)
                        assert command(port, "PUBSUB", "SHARDNUMSUB", channel) == [channel, 1]

                # A first delayed job: once it ran, the promoter's last pass found no other
                # and it sleeps on its safety poll (120 s here). Only the wake-up published by
                # the second one's enqueue gets that one promoted in time.
                first = await tasks[1].with_options(delay=0.2).enqueue(-1)
                assert await first.result(timeout=30) == -1
                t0 = time.monotonic()
                second = await tasks[2].with_options(delay=0.2).enqueue(-2)
                assert await second.result(timeout=30) == -2
                elapsed = time.monotonic() - t0
                assert elapsed < 0.2 + 1.5, f"the delayed job ran {elapsed:.2f}s after its enqueue"
                assert worker.processed == len(jobs) + 2
        after = _bus_counters(embedded)
    sent = {port: after[port][0] - before[port][0] for port in embedded.ports}
    assert sent == dict.fromkeys(embedded.ports, 0), f"PUBLISH broadcast over the bus: {sent}"
    # SPUBLISH goes to the replicas of each shard only: proof the notifications were published.
    assert sum(after[port][1] - before[port][1] for port in embedded.ports) >= len(jobs)


@pytest.mark.cluster_too
async def test_running_jobs_of_several_queues_are_cancelled(
    redis_url: str,
    namespace: str,
    redis: Any,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each queue has its own cancel channel; the worker listens on all of them (on the
    cluster the queues are on three masters)."""
    monkeypatch.setattr(handle, "RECHECK_INTERVAL_S", NO_SAFETY_NET_S)
    queues = ["a", "b", "c"]
    if request.node.callspec.params.get("redis_url") == "cluster":
        queues = tags_on_distinct_masters(_embedded(request.getfixturevalue("cluster")), 3)
    app = Engine(redis_url, namespace=namespace)
    started: set[int] = set()
    tasks = []
    for queue in queues:

        @app.task(name=f"long_{queue}", queue=queue, timeout=60, max_attempts=3)
        async def long_job(ctx: JobContext, n: int) -> None:
            started.add(n)
            await anyio.sleep(60)

        tasks.append(long_job)
    async with app:
        async with worker_running(app, concurrency=10) as worker:
            jobs = [await task.enqueue(n) for n, task in enumerate(tasks)]
            for job in jobs:
                await eventually(lambda job=job: _active(job), timeout=10, what="the start recorded")
            t0 = time.monotonic()
            for job in jobs:
                assert await job.cancel() is True
            for job in jobs:
                with pytest.raises(JobFailed, match="cancelled"):
                    await job.result(timeout=20)
            assert time.monotonic() - t0 < 15  # stopped by the request, not by the 60-s timeout
            await eventually(lambda: _true(worker.busy == 0), timeout=10, what="runners free")
        for job in jobs:
            info = await job.info()
            assert info is not None and info.status == Status.CANCELLED and info.attempts == 1
    assert started == {0, 1, 2}


async def _true(value: bool) -> bool:
    return value


@pytest.mark.cluster_too
async def test_heartbeats_live_in_expiring_keys_and_a_zset(
    redis_url: str, namespace: str, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One key per worker with a TTL, a zset of last-seen times; a clean stop forgets the
    worker at once, a long-silent zset entry is swept, one whose key is gone is not listed."""
    monkeypatch.setattr(Heartbeat, "INTERVAL_S", 0.1)
    app = Engine(redis_url, namespace=namespace)

    @app.task(timeout=5)
    async def noop(ctx: JobContext) -> None:
        return None

    async with app:
        gateway = await app.ready()
        keys = gateway.keys
        now = app.clock.time()
        # Entries of the zset without a heartbeat key: one long silent, one whose key expired.
        await redis.zadd(keys.workers, {"gone-long-ago": now - 3600, "key-expired": now})
        async with worker_running(app, name="w-one"):
            async with worker_running(app, name="w-two"):

                async def both() -> bool:
                    return sorted(b.id for b in await workers(app)) == ["w-one", "w-two"]

                await eventually(both, timeout=10, what="both workers listed")
                for worker_id in ("w-one", "w-two"):
                    assert 0 < await redis.ttl(keys.worker(worker_id)) <= 30
                assert set(await gateway.beats()) == {"w-one", "w-two"}
            # w-two stopped cleanly: its key and its zset entry are gone at once.
            assert [b.id for b in await workers(app)] == ["w-one"]
            assert await redis.exists(keys.worker("w-two")) == 0
            assert await redis.zscore(keys.workers, "w-two") is None

            async def swept() -> bool:
                return await redis.zscore(keys.workers, "gone-long-ago") is None

            await eventually(swept, timeout=10, what="the long-silent entry swept")
            # Recent, so kept in the zset, but with no key it is no live worker.
            assert await redis.zscore(keys.workers, "key-expired") is not None
            assert set(await gateway.beats()) == {"w-one"}
        assert await workers(app) == []
        assert await redis.zrange(keys.workers, 0, -1) == ["key-expired"]
