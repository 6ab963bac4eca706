"""Fixtures for the script tests: a Gateway on the session's server, in a namespace of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.broker.gateway import Gateway


@pytest.fixture
async def gateway(redis_url: str, namespace: str) -> AsyncIterator[Gateway]:
    gw = Gateway(redis_url, namespace)
    await gw.sharded_pubsub()  # gw.sharded: whether the scripts SPUBLISH (set by a ping otherwise)
    yield gw
    keys = [key async for key in gw.redis.scan_iter(match=f"{namespace}:*", count=1000)]
    if keys:
        await gw.redis.delete(*keys)
    await gw.close()
