"""Shared test helpers: waiting on conditions with a deadline (never a bare sleep)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await anyio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {what or check} (last: {last!r})")


def start_worker_process(
    app_spec: str, redis_url: str, namespace: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    full_env = {
        **os.environ,
        "ENGINE_REDIS_URL": redis_url,
        "ENGINE_NAMESPACE": namespace,
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "engine.worker", app_spec, *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout)


from engine.embedded import free_port as free_port  # noqa: E402


async def enqueue_by_spec(
    app: Any, task: Any, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
) -> list[Any]:
    """Enqueue jobs of a task defined in another app (a worker subprocess's), in one call."""
    from engine.producer import Options

    return list(await app._enqueue(task.spec, calls, Options()))


async def task_announced(app: Any, name: str) -> bool:
    gateway = app.gateway
    return bool(await gateway.redis.hexists(gateway.keys.tasks, name))


async def fresh_database(server_url: str) -> str:
    """A new empty database on the PostgreSQL server; returns its URL."""
    import uuid

    import asyncpg

    name = f"t{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{server_url.rpartition('/')[0]}/{name}"


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most (start, end) intervals open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak
