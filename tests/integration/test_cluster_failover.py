"""A master of the cluster SIGKILLed under load: its replica takes over, no acknowledged job
is lost, the worker goes on, and cron on that shard still fires each tick once.

Runs are recorded in a ledger on the standalone server, which does not fail over with the
shard. The cluster is put back as it was (the killed node rejoins as a replica)."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from engine import Engine, JobContext
from engine.broker import RedisError
from engine.core.errors import ConnectionFailed
from engine.embedded import EmbeddedCluster, tags_on_distinct_masters
from tests.apps.failover_app import runs_key, ticks_key
from tests.helpers import eventually, start_worker_process, stop_process, task_announced

CONCURRENCY = 50


async def test_a_killed_master_loses_no_acknowledged_job(
    cluster: Any, redis_url: str, namespace: str
) -> None:
    if not isinstance(cluster, EmbeddedCluster):
        pytest.skip("needs the embedded cluster, to kill one of its masters")
    queues = tags_on_distinct_masters(cluster, 3)
    victim = cluster.master_of("{" + queues[0] + "}")
    # Seed every client with a node that survives (a new process could not start from the
    # victim's address once it is gone).
    seed = f"redis://127.0.0.1:{next(p for p in cluster.masters() if p != victim)}/0"
    env = {"TEST_QUEUES": ",".join(queues), "TEST_LEDGER_URL": redis_url}
    proc = start_worker_process(
        "tests.apps.failover_app:app", seed, namespace, "--concurrency", str(CONCURRENCY), env=env
    )
    app = Engine(seed, namespace=namespace)
    tasks = []
    for queue in queues:

        @app.task(name=f"record_{queue}", queue=queue, timeout=10, max_attempts=20)
        async def record(ctx: JobContext, n: int) -> int:
            return n

        tasks.append(record)
    acknowledged: dict[str, str] = {}  # job id -> queue: enqueues the cluster confirmed
    refused = 0
    stop = anyio.Event()

    async def produce() -> None:
        nonlocal refused
        n = 0
        while not stop.is_set():
            task = tasks[n % len(tasks)]
            try:
                job = await task.enqueue(n)
                acknowledged[job.id] = task.queue
            except (RedisError, ConnectionFailed, OSError):
                refused += 1  # the shard is unwritable for a few seconds: not acknowledged
            n += 1
            await anyio.sleep(0.002)

    def on_victim_since(mark: int) -> int:
        return sum(1 for q in list(acknowledged.values())[mark:] if q == queues[0])

    ledger_client: Any = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with app:
            await eventually(lambda: task_announced(app, "record_" + queues[0]), timeout=20, what="worker up")
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                await eventually(lambda: _true(len(acknowledged) >= 300), timeout=30, what="300 enqueued")

                async def ticked() -> bool:
                    return await ledger_client.hlen(ticks_key(namespace)) > 0

                # Cron has fired before the kill: the run is short (ticks fall due once a
                # second, and none can be written while the shard is down), and one ended with
                # no tick to check.
                await eventually(ticked, timeout=20, what="a cron tick run")
                cluster.node(victim).kill()
                promoted = await anyio.to_thread.run_sync(cluster.wait_for_failover, victim)
                mark = len(acknowledged)
                await eventually(
                    lambda: _true(on_victim_since(mark) >= 100), timeout=30, what="the shard writable again"
                )
                stop.set()
            assert promoted != victim

            async def all_ran() -> bool:
                runs = await ledger_client.hgetall(runs_key(namespace))
                return set(acknowledged) <= set(runs)

            await eventually(all_ran, timeout=60, what="every acknowledged job run")
            assert proc.poll() is None, "the worker exited"
            runs = {k: int(v) for k, v in (await ledger_client.hgetall(runs_key(namespace))).items()}
            ticks = [int(v) for v in (await ledger_client.hgetall(ticks_key(namespace))).values()]
        lost = [job_id for job_id in acknowledged if job_id not in runs]
        duplicated = [job_id for job_id, count in runs.items() if count > 1]
        print(
            f"\n[failover] {len(acknowledged)} acknowledged, {refused} refused during the failover, "
            f"{len(lost)} lost, {len(duplicated)} run twice, {len(ticks)} ticks"
        )
        assert lost == []
        # Only jobs in flight on the killed shard may run again (at-least-once).
        assert all(acknowledged.get(job_id) == queues[0] for job_id in duplicated)
        assert len(duplicated) <= CONCURRENCY
        assert ticks and all(count == 1 for count in ticks), ticks
    finally:
        stop.set()
        stop_process(proc)
        await ledger_client.aclose()
        with contextlib.suppress(Exception):
            await app.close()
        # Put the cluster back: the killed node rejoins as a replica of its successor.
        await anyio.to_thread.run_sync(cluster.restart_node, cluster.ports.index(victim))


async def _true(value: bool) -> bool:
    return value
