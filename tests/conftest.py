from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from engine import Engine
from engine.embedded import EmbeddedCluster, EmbeddedPostgres, EmbeddedSentinel
from engine.history import SCHEMA_VERSION, JobLog

# --- Real servers for the whole session --------------------------------------------------
# Point ENGINE_TEST_REDIS_URL / ENGINE_TEST_DATABASE_URL at existing servers to skip the
# embedded ones. Sync fixtures on purpose: they must not depend on an event loop.


@pytest.fixture(scope="session")
def standalone_redis_url(engine_redis_url: str) -> str:
    """The pytest plugin's server (engine/testing/plugin.py), so the suite and the sample
    user suite's fixtures share one Valkey."""
    return engine_redis_url


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The standalone server's URL; for a test marked ``cluster_too``, each of the standalone
    server's and the cluster's in turn (see pytest_generate_tests)."""
    if getattr(request, "param", "standalone") == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    return str(request.getfixturevalue("standalone_redis_url"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test marked cluster_too runs twice: against the standalone server and the cluster.
    if metafunc.definition.get_closest_marker("cluster_too") and "redis_url" in metafunc.fixturenames:
        metafunc.parametrize("redis_url", ["standalone", "cluster"], indirect=True)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("ENGINE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with EmbeddedPostgres(fast=True) as server:
        yield server.url


# --- Per-test isolation ------------------------------------------------------------------


@pytest.fixture
def namespace() -> str:
    """A key prefix no other test uses, so tests can share one server (and run in parallel)."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def app(redis_url: str, namespace: str) -> AsyncIterator[Engine]:
    engine = Engine(redis_url, namespace=namespace)
    yield engine
    await engine.close()


@pytest.fixture
async def logged_app(redis_url: str, database_url: str, namespace: str) -> AsyncIterator[Engine]:
    """An Engine with its own namespace and its own fresh job-log database."""
    from tests.helpers import fresh_database

    engine = Engine(redis_url, database_url=await fresh_database(database_url), namespace=namespace)
    yield engine
    await engine.close()


@pytest.fixture
async def joblog(database_url: str) -> AsyncIterator[JobLog]:
    """A JobLog in a schema of its own, migrated, dropped afterwards."""
    schema = f"t{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        store = JobLog(database_url, schema=schema)
        await store.connect()
        try:
            assert await store.migrate() == SCHEMA_VERSION
            yield store
        finally:
            await store.close()
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await admin.close()


@pytest.fixture
async def redis(redis_url: str, namespace: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A raw client on the test's server (a cluster client for the cluster's run)."""
    if getattr(request.node, "callspec", None) and request.node.callspec.params.get("redis_url") == "cluster":
        client: Any = aioredis.RedisCluster.from_url(redis_url, decode_responses=True)
        yield client
        await _delete_namespace(client, namespace)
        await client.aclose()
        return
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# --- A real Redis/Valkey Cluster for the whole session ------------------------------------
# Started only for the tests that ask for it (≈ 2.5 s): 3 masters and 3 replicas on loopback.
# ENGINE_TEST_CLUSTER_URL points at an existing cluster instead; then only its URL is known,
# so tests that kill nodes need the EmbeddedCluster itself (check with isinstance).


@dataclass(frozen=True)
class ExternalCluster:
    """A cluster the test run did not start: ENGINE_TEST_CLUSTER_URL."""

    url: str


@pytest.fixture(scope="session")
def cluster() -> Iterator[EmbeddedCluster | ExternalCluster]:
    url = os.environ.get("ENGINE_TEST_CLUSTER_URL")
    if url:
        yield ExternalCluster(url)
        return
    with EmbeddedCluster() as server:
        yield server


@pytest.fixture(scope="session")
def cluster_url(cluster: EmbeddedCluster | ExternalCluster) -> str:
    return cluster.url


async def _delete_namespace(client: Any, namespace: str) -> None:
    """A cluster's SCAN runs per node: delete what every master holds of the namespace."""
    for node in client.get_primaries():
        keys = [k async for k in client.scan_iter(match=f"{namespace}:*", count=1000, target_nodes=node)]
        for key in keys:
            await client.delete(key)


# --- A real Redis Sentinel set for the whole session ---------------------------------------
# Started only for the tests that ask for it (≈ 0.5 s): a master, a replica and 3 sentinels on
# loopback. ENGINE_TEST_SENTINEL_URL (redis+sentinel://host:port,.../master/0) points at an
# existing set instead; tests that kill nodes need the EmbeddedSentinel itself (isinstance).


@dataclass(frozen=True)
class ExternalSentinel:
    """A Sentinel set the test run did not start: ENGINE_TEST_SENTINEL_URL."""

    url: str


@pytest.fixture(scope="session")
def sentinel() -> Iterator[EmbeddedSentinel | ExternalSentinel]:
    url = os.environ.get("ENGINE_TEST_SENTINEL_URL")
    if url:
        yield ExternalSentinel(url)
        return
    with EmbeddedSentinel() as server:
        yield server


@pytest.fixture(scope="session")
def sentinel_url(sentinel: EmbeddedSentinel | ExternalSentinel) -> str:
    return sentinel.url
