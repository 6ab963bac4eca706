"""Real-server tests for engine.embedded: every server here is an actual process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from engine.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError, free_port


def pg_fetch(url: str, query: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return list(await conn.fetch(query))
        finally:
            await conn.close()

    return asyncio.run(run())


def pg_execute(url: str, script: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(script)
        finally:
            await conn.close()

    asyncio.run(run())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port that something is already listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_redis_set_get_then_cleanup() -> None:
    with EmbeddedRedis() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        assert client.info("server")["tcp_port"] == server.port
        assert client.config_get("appendonly") == {"appendonly": "no"}
        pid, data_dir = server.pid, server.data_dir
        client.close()
    assert pid is not None and not pid_alive(pid)
    assert not data_dir.exists()  # its own tempdir goes away on stop
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url).ping()


def test_redis_restart_with_aof_keeps_every_write(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", appendonly=True) as server:
        port = server.port
        client = redis.Redis.from_url(server.url)
        for i in range(200):
            client.set(f"k{i}", i)
        server.restart()
        assert server.port == port
        assert client.get("k0") == b"0"
        assert client.get("k199") == b"199"
        assert client.dbsize() == 200
        client.close()
    assert (tmp_path / "redis").is_dir()  # a caller-provided dir is kept


def test_redis_kill_then_start_recovers_from_aof() -> None:
    with EmbeddedRedis(appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        client.set("survivor", "yes")
        old_pid = server.pid
        server.kill()
        assert old_pid is not None and not pid_alive(old_pid)
        assert not server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.start()
        assert server.pid != old_pid
        assert client.get("survivor") == b"yes"
        client.close()


def test_redis_stop_is_idempotent() -> None:
    server = EmbeddedRedis()
    server.stop()  # never started
    server.start()
    server.start()  # already running: no second process
    server.stop()
    server.stop()
    assert not server.running


def test_redis_start_failure_reports_log_tail(busy_port: int) -> None:
    server = EmbeddedRedis(port=busy_port)
    try:
        with pytest.raises(EmbeddedServerError, match="Address already in use"):
            server.start()
        assert not server.running
    finally:
        server.stop()


def test_redis_url_fixture(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    client.close()


def test_postgres_select_1_then_cleanup() -> None:
    with EmbeddedPostgres(fast=True) as server:
        assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        rows = pg_fetch(
            server.url,
            "SELECT 1 AS one, current_setting('fsync') AS fsync, "
            "current_setting('unix_socket_directories') AS sockets",
        )
        assert dict(rows[0]) == {"one": 1, "fsync": "off", "sockets": ""}
        data_dir = server.data_dir
    assert not data_dir.exists()
    with pytest.raises(OSError):
        pg_fetch(server.url, "SELECT 1")


def test_postgres_stop_start_and_restart_keep_data(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        server.start()
        port = server.port
        pg_execute(server.url, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')")
        assert pg_fetch(server.url, "SHOW fsync")[0][0] == "on"  # durable unless fast=True
        server.stop()
        server.stop()
        with pytest.raises(OSError):
            pg_fetch(server.url, "SELECT 1")
        server.start()
        assert server.port == port
        assert [r["v"] for r in pg_fetch(server.url, "SELECT v FROM kept")] == ["before"]
        server.restart()
        assert server.port == port
        assert [r["v"] for r in pg_fetch(server.url, "SELECT v FROM kept")] == ["before"]
    finally:
        server.stop()
    assert (tmp_path / "pg" / "PG_VERSION").exists()  # a caller-provided dir is kept


def test_postgres_start_failure_reports_log_tail(busy_port: int) -> None:
    server = EmbeddedPostgres(port=busy_port, fast=True)
    try:
        with pytest.raises(EmbeddedServerError, match="Address already in use"):
            server.start()
        assert not server.running
    finally:
        server.stop()


@pytest.mark.parametrize("server_class", [EmbeddedRedis, EmbeddedPostgres])
def test_auto_port_taken_before_start_is_repicked(
    server_class: type[EmbeddedRedis] | type[EmbeddedPostgres],
) -> None:
    server = server_class()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        taken = server.port
        try:
            server.start()
            assert server.port != taken
            assert server.running
        finally:
            server.stop()


CRASHING_SCRIPT = """
from engine.embedded import EmbeddedPostgres, EmbeddedRedis
r = EmbeddedRedis()
r.start()
pg = EmbeddedPostgres(fast=True)
pg.start()
print(r.url, r.data_dir, pg.url, pg.data_dir.parent, flush=True)
raise RuntimeError("simulated crash without stop()")
"""


def test_servers_do_not_outlive_a_crashed_interpreter() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_TEST_")}
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 1, result.stderr
    assert "simulated crash" in result.stderr
    redis_url, redis_dir, pg_url, pg_dir = result.stdout.split()
    # atexit already waited for both servers to exit, so nothing may still listen.
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url).ping()
    with pytest.raises(OSError):
        pg_fetch(pg_url, "SELECT 1")
    assert not Path(redis_dir).exists()
    assert not Path(pg_dir).exists()


def test_database_url_fixture(database_url: str) -> None:
    assert pg_fetch(database_url, "SELECT 1")[0][0] == 1
