"""replay.lua through operations.replay: DONE for a dead letter, NOT_FAILED, NO_SUCH_JOB."""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.broker.scripts import operations
from engine.broker.scripts.runner import Call
from engine.core.errors import ScriptCode
from tests.scripts.support import Q, failed, waiting


def replay_call(gateway: Gateway, job_id: str) -> Call[ScriptCode]:
    qk = gateway.keys.queue(Q)
    return operations.replay(
        stream=qk.stream,
        dlq=qk.dlq,
        stats=qk.stats,
        outbox=qk.outbox,
        joblog_flag=qk.joblog_flag,
        waiting=qk.waiting,
        job_prefix=qk.job_prefix,
        job_id=job_id,
        now_ms=gateway.now_ms(),
        queue=Q,
    )


async def test_a_failed_job_runs_again_from_scratch(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await failed(gateway, "f")
    await gateway.switch_on_joblog([Q])
    assert await gateway.scripts.run(replay_call(gateway, "f")) is ScriptCode.DONE
    h = await gateway.redis.hgetall(qk.job("f"))
    assert (h["status"], h["attempts"]) == ("waiting", "0")
    assert "dlq" not in h and "finished" not in h
    assert await gateway.redis.xlen(qk.dlq) == 0
    ((entry_id, fields),) = await gateway.redis.xrange(qk.stream)
    assert (entry_id, fields) == (h["msg"], {"j": "f"})
    assert await gateway.redis.hget(qk.stats, "replayed") == "1"
    ((_, event),) = await gateway.redis.xrange(qk.outbox)
    assert (event["e"], event["j"]) == ("replayed", "f")


async def test_a_job_not_failed_and_a_missing_one_are_refused(gateway: Gateway) -> None:
    await waiting(gateway, "a")
    assert await gateway.scripts.run(replay_call(gateway, "a")) is ScriptCode.NOT_FAILED
    assert await gateway.redis.xlen(gateway.keys.queue(Q).stream) == 1  # nothing added
    assert await gateway.scripts.run(replay_call(gateway, "nope")) is ScriptCode.NO_SUCH_JOB
    assert await gateway.replay(Q, "nope") == ScriptCode.NO_SUCH_JOB
