"""bury.lua through bindings.bury: DONE for a pending entry, NOT_PENDING once it is not."""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.broker.scripts import bindings
from engine.broker.scripts.runner import Call
from engine.core.errors import ScriptCode
from tests.scripts.support import Q, active, pending_to, waiting


def bury_call(gateway: Gateway, entry_id: str, job_id: str, reason: str) -> Call[ScriptCode]:
    qk = gateway.keys.queue(Q)
    return bindings.bury(
        stream=qk.stream,
        dlq=qk.dlq,
        stats=qk.stats,
        waiting=qk.waiting,
        job_prefix=qk.job_prefix,
        entry_id=entry_id,
        job_id=job_id,
        reason=reason,
    )


async def test_a_pending_entry_is_acknowledged_and_dead_lettered(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    (row,) = await active(gateway, "a")
    assert await gateway.scripts.run(bury_call(gateway, row.entry_id, "a", "odd data")) is ScriptCode.DONE
    assert await pending_to(gateway) == {}
    ((dead_id, dead),) = await gateway.redis.xrange(qk.dlq)
    assert (dead["j"], dead["entry"], dead["error"]) == ("a", row.entry_id, "odd data")
    h = await gateway.redis.hgetall(qk.job("a"))
    assert (h["status"], h["error"], h["dlq"]) == ("failed", "odd data", dead_id)
    assert await gateway.redis.hget(qk.stats, "failed") == "1"


async def test_a_fresh_job_buried_leaves_the_index_of_waiting_jobs(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "a")
    ((_, entry_id, _),) = await gateway.read([Q], "w1", 10, None)
    assert await gateway.scripts.run(bury_call(gateway, entry_id, "a", "odd data")) is ScriptCode.DONE
    assert await gateway.redis.exists(qk.waiting) == 0
    assert await gateway.redis.hget(qk.job("a"), "status") == "failed"


async def test_an_entry_no_longer_pending_is_left_alone(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    (row,) = await active(gateway, "a")
    await gateway.scripts.run(bury_call(gateway, row.entry_id, "a", "once"))
    assert await gateway.scripts.run(bury_call(gateway, row.entry_id, "a", "twice")) is ScriptCode.NOT_PENDING
    assert await gateway.redis.xlen(qk.dlq) == 1
    assert await gateway.bury(Q, row.entry_id, "a", "thrice") == 0  # the gateway's count


async def test_an_entry_without_a_job_leaves_only_the_dead_letter(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.ensure_group(Q)
    entry_id = await gateway.redis.xadd(qk.stream, {"x": "1"})
    await gateway.read([Q], "w1", 10, None)
    assert await gateway.scripts.run(bury_call(gateway, entry_id, "", "no job id")) is ScriptCode.DONE
    ((_, dead),) = await gateway.redis.xrange(qk.dlq)
    assert (dead["j"], dead["error"]) == ("", "no job id")
