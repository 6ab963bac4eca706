"""lease.lua through operations.lease: renew and release a held lock, LOCK_NOT_HELD otherwise."""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.broker.scripts import operations
from engine.core.errors import ScriptCode


async def test_the_holder_renews_and_releases(gateway: Gateway) -> None:
    lock = gateway.keys.queue("q").cron_leader
    acquired, remaining_ms = await gateway.acquire_lock(lock, "me", 1_000)
    assert acquired and 0 < remaining_ms <= 1_000
    assert (
        await gateway.scripts.run(operations.lease(lock=lock, token="me", lease_ms=60_000)) is ScriptCode.DONE
    )
    assert 1_000 < await gateway.redis.pttl(lock) <= 60_000
    assert await gateway.scripts.run(operations.lease(lock=lock, token="me", lease_ms=0)) is ScriptCode.DONE
    assert await gateway.redis.exists(lock) == 0


async def test_another_token_changes_nothing(gateway: Gateway) -> None:
    lock = gateway.keys.queue("q").cron_leader
    await gateway.redis.set(lock, "other", px=5_000)
    for lease_ms in (60_000, 0):
        code = await gateway.scripts.run(operations.lease(lock=lock, token="me", lease_ms=lease_ms))
        assert code is ScriptCode.LOCK_NOT_HELD
    assert await gateway.redis.get(lock) == "other" and await gateway.redis.pttl(lock) <= 5_000
    assert await gateway.renew_lock(lock, "me", 1_000) is False
    assert await gateway.renew_lock(lock, "other", 1_000) is True
