"""cancel.lua through operations.cancel: DONE, CANCEL_REQUESTED, ALREADY_FINISHED, NO_SUCH_JOB."""

from __future__ import annotations

import pytest

from engine.broker.gateway import Gateway
from engine.broker.scripts import operations
from engine.broker.scripts.runner import Call
from engine.core.errors import ScriptCode
from tests.scripts.support import KEEP, PAYLOAD, Q, enqueue_call, failed, job, waiting


def cancel_call(gateway: Gateway, job_id: str, retention_ms: int = 0) -> Call[ScriptCode]:
    qk = gateway.keys.queue(Q)
    return operations.cancel(
        stream=qk.stream,
        delayed=qk.delayed,
        stats=qk.stats,
        outbox=qk.outbox,
        joblog_flag=qk.joblog_flag,
        waiting=qk.waiting,
        cancels=qk.cancels,
        job_prefix=qk.job_prefix,
        job_id=job_id,
        now_ms=gateway.now_ms(),
        retention_ms=retention_ms,
        done_channel_prefix=qk.done_channel(""),
        cancel_channel=qk.cancel_channel,
        queue=Q,
        sharded=bool(gateway.sharded),
    )


async def test_a_waiting_job_is_cancelled_and_keeps_its_payload(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "a")
    assert await gateway.scripts.run(cancel_call(gateway, "a", retention_ms=60_000)) is ScriptCode.DONE
    h = await gateway.redis.hgetall(qk.job("a"))
    assert (h["status"], h["payload"]) == ("cancelled", PAYLOAD.decode())
    assert "msg" not in h and h["finished"]
    assert await gateway.redis.xlen(qk.stream) == 0
    assert 0 < await gateway.redis.pttl(qk.job("a")) <= 60_000
    assert await gateway.redis.hget(qk.stats, "cancelled") == "1"
    assert await gateway.redis.exists(qk.waiting) == 0  # no longer a fresh job


async def test_a_fresh_job_cancelled_keeps_what_it_was_enqueued_with(gateway: Gateway) -> None:
    """With the job log on, its cancelled event is version 2 (1 was its enqueued event)."""
    qk = gateway.keys.queue(Q)
    await gateway.ensure_group(Q)
    await gateway.switch_on_joblog([Q])
    await gateway.scripts.run(enqueue_call(gateway, [job("a", priority=0, timeout=3.0)]))
    assert await gateway.scripts.run(cancel_call(gateway, "a")) is ScriptCode.DONE
    h = await gateway.redis.hgetall(qk.job("a"))
    assert (h["task"], h["pr"], h["timeout"], h["attempts"], h["v"]) == ("t", "0", "3.0", "0", "2")
    assert h["created"] and h["finished"]
    assert await gateway.redis.xlen(gateway.keys.queue(f"{Q}!0").stream) == 0
    events = [fields for _, fields in await gateway.redis.xrange(qk.outbox)]
    assert [(e.get("e"), e.get("v")) for e in events][-1] == ("cancelled", "2")


async def test_a_delayed_job_leaves_the_delayed_set(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    now = gateway.now_ms()
    await gateway.scripts.run(enqueue_call(gateway, [job("d", due_ms=now + 60_000)], now_ms=now))
    assert await gateway.scripts.run(cancel_call(gateway, "d")) is ScriptCode.DONE
    assert await gateway.redis.zcard(qk.delayed) == 0


@pytest.mark.parametrize("sharded", [True, False], ids=["spublish", "publish"])
async def test_a_running_job_gets_a_cancel_request(gateway: Gateway, sharded: bool) -> None:
    """On the queue's cancel channel, by SPUBLISH (Redis >= 7.0, Valkey) or PUBLISH (6.2)."""
    gateway.sharded = sharded  # the subscriber and the script's flag follow it
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "a")
    await gateway.fetch([Q], "w1", 10)
    async with gateway.subscriber() as pubsub:
        await pubsub.subscribe(qk.cancel_channel)
        assert await gateway.scripts.run(cancel_call(gateway, "a")) is ScriptCode.CANCEL_REQUESTED
        message = None
        for _ in range(50):  # the first reply is the subscription's, which the subscriber hides
            message = await pubsub.get_message(timeout=0.1)
            if message is not None:
                break
    assert message is not None and message["data"] == "a"
    assert await gateway.redis.hget(qk.job("a"), "status") == "cancelled"


async def test_a_finished_job_and_a_missing_one_are_refused(gateway: Gateway) -> None:
    await failed(gateway, "f")
    assert await gateway.scripts.run(cancel_call(gateway, "f")) is ScriptCode.ALREADY_FINISHED
    assert await gateway.scripts.run(cancel_call(gateway, "nope")) is ScriptCode.NO_SUCH_JOB
    assert await gateway.cancel(Q, "f", KEEP) is ScriptCode.ALREADY_FINISHED
