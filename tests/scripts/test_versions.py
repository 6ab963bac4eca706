"""versions.lua through operations.versions: has a job had a newer event than this one?"""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.broker.scripts import operations
from tests.scripts.support import Q


async def test_newer_same_and_gone(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.redis.hset(qk.job("a"), "v", "3")
    await gateway.redis.hset(qk.waiting, "fresh", "1-0")  # no hash yet: at version 1
    jobs: list[tuple[str, str | int]] = [("a", 2), ("a", "3"), ("a", 4), ("gone", 1), ("fresh", 1)]
    call = operations.versions(outbox=qk.outbox, waiting=qk.waiting, job_prefix=qk.job_prefix, jobs=jobs)
    assert await gateway.scripts.run(call) == [True, False, False, None, False]
