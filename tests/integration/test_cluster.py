"""Cluster mode on a real 6-node Valkey Cluster: detection and clear errors, a worker on queues
held by three different masters, and the job log shipped from outboxes on three nodes.

The core, DLQ, cron, history, inspector and dashboard-API tests marked ``cluster_too`` run
against the same cluster as well."""

from __future__ import annotations

import os
from typing import Any

import pytest

from engine import Backoff, ConfigurationError, Engine, JobContext
from engine.embedded import EmbeddedCluster, key_slot, tags_on_distinct_masters
from engine.testing import worker_running
from tests.helpers import eventually, fresh_database

FAST = Backoff(initial=0.05, factor=2.0, max=0.2, jitter=0.0)


def spread_queues(cluster: Any, n: int = 3) -> list[str]:
    if not isinstance(cluster, EmbeddedCluster):
        pytest.skip("needs the embedded cluster, to know which master holds which slot")
    queues = tags_on_distinct_masters(cluster, n)
    assert len({cluster.master_of("{" + q + "}") for q in queues}) == n
    return queues


async def test_a_plain_client_pointed_at_a_cluster_fails_clearly(cluster_url: str, namespace: str) -> None:
    app = Engine(cluster_url, namespace=namespace, cluster=False)
    with pytest.raises(ConfigurationError, match=r"node of a Redis Cluster.*cluster=True"):
        await app.connect()
    await app.close()


async def test_every_node_packs_commands_with_hiredis(cluster_url: str) -> None:
    from engine.broker.connection import connect_cluster, hiredis_packing

    client = connect_cluster(cluster_url)
    try:
        await client.ping(target_nodes=client.ALL_NODES)
        nodes = client.get_nodes()
        assert len(nodes) >= 3  # the masters (replicas only with read_from_replicas)
        for node in nodes:
            assert node.connection_class is hiredis_packing(node.connection_class.__mro__[1])
            assert node.connection_class.pack_command is not node.connection_class.__mro__[1].pack_command
    finally:
        await client.aclose()


async def test_cluster_mode_against_a_standalone_server_fails_clearly(redis_url: str, namespace: str) -> None:
    for app in (
        Engine(redis_url, namespace=namespace, cluster=True),
        Engine(redis_url + "?cluster=1", namespace=namespace),
    ):
        with pytest.raises(ConfigurationError, match="not a Redis Cluster node"):
            await app.connect()
        await app.close()


async def test_detection_valkey_schemes_and_the_environment(
    redis_url: str, cluster_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    standalone = Engine(redis_url.replace("redis://", "valkey://", 1), namespace=namespace)
    clustered = Engine(cluster_url.replace("redis://", "valkey://", 1), namespace=namespace)
    async with standalone, clustered:
        assert (standalone.gateway.cluster, clustered.gateway.cluster) == (False, True)
    monkeypatch.setenv("ENGINE_REDIS_CLUSTER", "maybe")
    with pytest.raises(ConfigurationError, match="ENGINE_REDIS_CLUSTER must be"):
        Engine(redis_url, namespace=namespace)
    monkeypatch.setenv("ENGINE_REDIS_CLUSTER", "1")
    assert Engine(redis_url, namespace=namespace).settings.cluster is True
    with pytest.raises(ConfigurationError, match="database other than 0"):
        Engine(cluster_url.rsplit("/", 1)[0] + "/3", namespace=namespace).gateway  # noqa: B018


async def test_a_worker_on_queues_of_three_masters(cluster: Any, cluster_url: str, namespace: str) -> None:
    queues = spread_queues(cluster)
    app = Engine(cluster_url, namespace=namespace)
    seen: dict[str, int] = {}
    tasks = []
    for queue in queues:

        @app.task(name=f"work_{queue}", queue=queue, timeout=5, max_attempts=3, backoff=FAST)
        async def work(ctx: JobContext, n: int) -> int:
            seen[ctx.job_id] = seen.get(ctx.job_id, 0) + 1
            if n < 0 and ctx.attempt == 1:
                raise ValueError("once")
            return n

        tasks.append(work)
    async with app, worker_running(app, concurrency=20) as worker:
        assert sorted(worker.queues) == sorted(queues)
        # the worker idles on three blocking reads (one per master) and each wakes it
        for i, task in enumerate(tasks):
            assert await (await task.enqueue(i)).result(timeout=10) == i
        jobs = [job for task in tasks for job in await task.enqueue_many([(n,) for n in range(30)])]
        retried = [await task.enqueue(-1) for task in tasks]
        delayed = [await task.with_options(delay=0.2).enqueue(7) for task in tasks]
        assert [await job.result(timeout=10) for job in jobs] == list(range(30)) * 3
        assert [await job.result(timeout=10) for job in retried] == [-1] * 3
        assert [await job.result(timeout=10) for job in delayed] == [7] * 3
        stats = await app.stats()
    for queue in queues:
        assert stats[queue]["completed"] == 1 + 30 + 1 + 1
        assert stats[queue]["retried"] == 1 and stats[queue]["failed"] == 0
    assert all(runs == 1 for job_id, runs in seen.items() if job_id not in {j.id for j in retried})


async def test_the_job_log_ships_from_outboxes_on_three_nodes(
    cluster: Any, cluster_url: str, database_url: str, namespace: str
) -> None:
    queues = spread_queues(cluster)
    app = Engine(cluster_url, database_url=await fresh_database(database_url), namespace=namespace)
    tasks = []
    for queue in queues:

        @app.task(name=f"log_{queue}", queue=queue, timeout=5)
        async def logged(ctx: JobContext, n: int) -> int:
            await ctx.log(f"n={n}")
            return n

        tasks.append(logged)
    async with app, worker_running(app):
        jobs = [job for task in tasks for job in await task.enqueue_many([(n,) for n in range(10)])]
        for job in jobs:
            await job.result(timeout=10)
        ids = {job.id for job in jobs}

        async def shipped() -> bool:
            page = await app.history(status="completed", limit=100)
            return {j.id for j in page.jobs} >= ids

        await eventually(shipped, timeout=30, what="every job's row in PostgreSQL")
        page = await app.history(status="completed", limit=100)
        assert {j.queue for j in page.jobs} == set(queues)
        assert [line.content for line in await app.job_logs(jobs[0].id)] == ["n=0"]


def test_queue_names_for_the_tests_spread_over_the_masters(cluster: Any) -> None:
    queues = spread_queues(cluster)
    assert len({key_slot("{" + q + "}") for q in queues}) == 3
    assert os.environ.get("ENGINE_REDIS_CLUSTER") is None  # no test leaks the variable
