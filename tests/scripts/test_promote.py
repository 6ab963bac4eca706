"""promote.lua through bindings.promote: due delayed jobs back to the stream, and the next due."""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.broker.scripts import bindings
from engine.broker.scripts.bindings import Promoted
from engine.broker.scripts.runner import Call
from tests.scripts.support import Q, enqueue_call, job


def promote_call(gateway: Gateway, now_ms: int, limit: int = 100) -> Call[Promoted]:
    qk = gateway.keys.queue(Q)
    return bindings.promote(
        delayed=qk.delayed, stream=qk.stream, job_prefix=qk.job_prefix, now_ms=now_ms, limit=limit
    )


async def test_due_jobs_move_and_the_next_due_time_is_told(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    now = gateway.now_ms()
    for job_id, due in (("soon", now + 1_000), ("sooner", now + 500), ("later", now + 60_000)):
        await gateway.scripts.run(enqueue_call(gateway, [job(job_id, due_ms=due)], now_ms=now))
    assert await gateway.scripts.run(promote_call(gateway, now)) == Promoted(0, now + 500)
    assert await gateway.scripts.run(promote_call(gateway, now + 1_000, limit=1)) == Promoted(1, now + 1_000)
    assert await gateway.scripts.run(promote_call(gateway, now + 1_000)) == Promoted(1, now + 60_000)
    moved = [fields["j"] for _, fields in await gateway.redis.xrange(qk.stream)]
    assert moved == ["sooner", "soon"]
    h = await gateway.redis.hgetall(qk.job("soon"))
    assert h["status"] == "waiting" and "due" not in h and h["msg"]
    assert await gateway.scripts.run(promote_call(gateway, now + 60_000)) == Promoted(1, None)


async def test_a_job_no_longer_delayed_is_dropped_from_the_set_not_moved(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    now = gateway.now_ms()
    await gateway.scripts.run(enqueue_call(gateway, [job("x", due_ms=now + 10)], now_ms=now))
    await gateway.redis.hset(qk.job("x"), "status", "cancelled")
    assert await gateway.scripts.run(promote_call(gateway, now + 10)) == Promoted(0, None)
    assert await gateway.redis.zcard(qk.delayed) == 0
    assert await gateway.redis.xlen(qk.stream) == 0
