"""delete.lua through operations.delete: DONE, JOB_RUNNING, NO_SUCH_JOB, and the history event."""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.broker.scripts import operations
from engine.broker.scripts.runner import Call
from engine.core.errors import ScriptCode
from tests.scripts.support import Q, active, failed, waiting


def delete_call(gateway: Gateway, job_id: str) -> Call[ScriptCode]:
    qk = gateway.keys.queue(Q)
    return operations.delete(
        stream=qk.stream,
        delayed=qk.delayed,
        dlq=qk.dlq,
        outbox=qk.outbox,
        joblog_flag=qk.joblog_flag,
        waiting=qk.waiting,
        job_prefix=qk.job_prefix,
        job_id=job_id,
        queue=Q,
    )


async def test_a_waiting_job_goes_with_its_entry_and_logs(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "a")
    await gateway.redis.rpush(qk.logs("a"), "a line")
    assert await gateway.scripts.run(delete_call(gateway, "a")) is ScriptCode.DONE
    assert await gateway.redis.exists(qk.job("a"), qk.logs("a")) == 0
    assert await gateway.redis.xlen(qk.stream) == 0
    assert await gateway.redis.xlen(qk.outbox) == 0  # no job log: no event
    assert await gateway.redis.exists(qk.waiting) == 0
    assert await gateway.scripts.run(delete_call(gateway, "a")) is ScriptCode.NO_SUCH_JOB


async def test_a_dead_letter_goes_and_the_history_is_told(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await failed(gateway, "f")
    await gateway.switch_on_joblog([Q])
    assert await gateway.scripts.run(delete_call(gateway, "f")) is ScriptCode.DONE
    assert await gateway.redis.xlen(qk.dlq) == 0
    ((_, event),) = await gateway.redis.xrange(qk.outbox)
    assert (event["e"], event["j"], event["q"]) == ("deleted", "f", Q)


async def test_a_running_job_and_a_missing_one_are_refused(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await active(gateway, "a")
    assert await gateway.scripts.run(delete_call(gateway, "a")) is ScriptCode.JOB_RUNNING
    assert await gateway.redis.exists(qk.job("a")) == 1
    assert await gateway.scripts.run(delete_call(gateway, "nope")) is ScriptCode.NO_SUCH_JOB
    assert await gateway.delete(Q, "a") == ScriptCode.JOB_RUNNING
