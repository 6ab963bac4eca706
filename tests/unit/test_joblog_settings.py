"""The job log's parts before any connection: a clear error, leases that follow the visibility timeout."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from engine.history import JobLog
from engine.history.shipper import Shipper

VT = 2.0


async def test_not_connected_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="not connected"):
        await JobLog("postgresql://localhost/x").job("a")


def test_the_lease_follows_the_visibility_timeout() -> None:
    client: Any = aioredis.Redis()  # never connected: only the settings are looked at
    store = JobLog("postgresql://localhost/x")
    shipper = Shipper(client, store, ["o"], "s", visibility_timeout=VT)
    assert shipper.reclaim_idle_ms == 2000 and shipper.renew_interval < VT / 2
    assert Shipper(client, store, ["o"], "s").reclaim_idle_ms == 30_000  # the engine's default
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="visibility_timeout"):
            Shipper(client, store, ["o"], "s", visibility_timeout=bad)
