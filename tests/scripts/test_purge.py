"""purge.lua through operations.purge: dead letters and their failed jobs go, in batches."""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.broker.scripts import operations
from engine.broker.scripts.runner import Call
from tests.scripts.support import Q, failed


def purge_call(gateway: Gateway, batch: int) -> Call[int]:
    qk = gateway.keys.queue(Q)
    return operations.purge(
        dlq=qk.dlq,
        outbox=qk.outbox,
        joblog_flag=qk.joblog_flag,
        outbox_extra=qk.outbox_extra,
        job_prefix=qk.job_prefix,
        batch=batch,
        queue=Q,
    )


async def test_dead_letters_go_oldest_first_with_their_jobs(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    for job_id in ("f1", "f2", "f3"):
        await failed(gateway, job_id)
    await gateway.switch_on_joblog([Q])
    assert await gateway.scripts.run(purge_call(gateway, 1)) == 1
    assert await gateway.redis.exists(qk.job("f1")) == 0
    assert [fields["j"] for _, fields in await gateway.redis.xrange(qk.dlq)] == ["f2", "f3"]
    assert await gateway.scripts.run(purge_call(gateway, 10)) == 2
    assert await gateway.redis.exists(qk.job("f2"), qk.job("f3")) == 0
    assert await gateway.redis.xlen(qk.dlq) == 0
    events = [fields for _, fields in await gateway.redis.xrange(qk.outbox)]
    assert [e["n"] for e in events] == ["1", "2"]
    assert await gateway.redis.get(qk.outbox_extra) == "1"
    assert await gateway.scripts.run(purge_call(gateway, 10)) == 0  # empty


async def test_a_job_replayed_since_keeps_its_data(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await failed(gateway, "f")
    await gateway.redis.hset(qk.job("f"), "status", "waiting")  # as if replayed meanwhile
    assert await gateway.scripts.run(purge_call(gateway, 10)) == 1
    assert await gateway.redis.exists(qk.job("f")) == 1
    assert await gateway.purge_dlq(Q) == 0
