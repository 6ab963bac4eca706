"""enqueue.lua through bindings.enqueue: waiting and delayed jobs, duplicates, the fence."""

from __future__ import annotations

import pytest

from engine.broker.gateway import Gateway
from engine.core.errors import FenceRejected, ScriptCode
from engine.core.transitions import Fence
from tests.scripts.support import PAYLOAD, Q, enqueue_call, job


async def test_a_job_due_now_is_its_entry_and_a_field_of_the_index(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    written = await gateway.scripts.run(
        enqueue_call(gateway, [job("a", timeout=2.5, max_attempts=3, tick_ms=7)])
    )
    assert written == [("a", True)]
    assert await gateway.redis.exists(qk.job("a")) == 0  # no hash until it starts
    ((entry_id, fields),) = await gateway.redis.xrange(qk.stream)
    assert await gateway.redis.hgetall(qk.waiting) == {"a": entry_id}
    assert fields == {"j": "a", "t": "t", "p": PAYLOAD.decode(), "o": "2.5", "m": "3", "k": "7"}
    assert await gateway.redis.hget(qk.stats, "enqueued") == "1"
    # Read back as the hash it will have.
    h = await gateway.job_hash(Q, "a")
    assert h is not None
    assert (h["status"], h["task"], h["attempts"], h["msg"]) == ("waiting", "t", "0", entry_id)
    assert (h["timeout"], h["max_attempts"], h["tick"]) == ("2.5", "3", "7")
    assert (h["payload"], h["created"]) == (PAYLOAD.decode(), entry_id.split("-")[0])
    # Its id is taken: the same id again is not added.
    assert await gateway.scripts.run(enqueue_call(gateway, [job("a")])) == [("a", False)]


async def test_an_id_given_twice_in_one_batch_is_added_once(gateway: Gateway) -> None:
    """The batch's index fields are written at its end: the second is still seen as taken."""
    qk = gateway.keys.queue(Q)
    written = await gateway.scripts.run(enqueue_call(gateway, [job("a"), job("b"), job("a")]))
    assert written == [("a", True), ("b", True), ("a", False)]
    assert await gateway.redis.xlen(qk.stream) == 2
    entries = {fields["j"]: entry_id for entry_id, fields in await gateway.redis.xrange(qk.stream)}
    assert await gateway.redis.hgetall(qk.waiting) == entries


async def test_a_job_due_later_waits_in_the_delayed_set(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    now = gateway.now_ms()
    assert await gateway.scripts.run(enqueue_call(gateway, [job("d", due_ms=now + 60_000)], now_ms=now)) == [
        ("d", True)
    ]
    assert await gateway.redis.zscore(qk.delayed, "d") == now + 60_000
    h = await gateway.redis.hgetall(qk.job("d"))
    assert (h["status"], h["due"], h["payload"]) == ("delayed", str(now + 60_000), PAYLOAD.decode())
    assert await gateway.redis.xlen(qk.stream) == 0


async def test_an_existing_id_or_a_taken_idempotency_key_adds_nothing(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    assert await gateway.scripts.run(enqueue_call(gateway, [job("a"), job("b")])) == [
        ("a", True),
        ("b", True),
    ]
    assert await gateway.scripts.run(enqueue_call(gateway, [job("a")])) == [("a", False)]
    once = {"idempotency_key": "k", "idempotency_ttl_ms": 60_000}
    assert await gateway.scripts.run(enqueue_call(gateway, [job("c", **once)])) == [("c", True)]
    assert await gateway.scripts.run(enqueue_call(gateway, [job("e", **once)])) == [("c", False)]
    assert await gateway.redis.exists(qk.job("e")) == 0
    assert await gateway.redis.hget(qk.stats, "enqueued") == "3"


async def test_with_the_job_log_on_a_batch_is_one_outbox_entry(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.switch_on_joblog([Q])
    await gateway.scripts.run(enqueue_call(gateway, [job("a"), job("b")]))
    ((_, fields),) = await gateway.redis.xrange(qk.outbox)
    assert (fields["q"], fields["n"]) == (Q, "2")
    assert await gateway.redis.get(qk.outbox_extra) == "1"


async def test_fenced_without_the_lock_is_refused_and_writes_nothing(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.redis.set(qk.cron_leader, "someone else")
    with pytest.raises(FenceRejected) as rejected:
        await gateway.scripts.run(enqueue_call(gateway, [job("c")], fence=Fence("me", "s", 1000)))
    assert rejected.value.reason is ScriptCode.FENCED
    assert await gateway.redis.exists(qk.job("c"), qk.stream, qk.cron_last) == 0


async def test_fenced_fires_each_tick_once_and_never_an_older_one(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.redis.set(qk.cron_leader, "me")
    fired = await gateway.scripts.run(enqueue_call(gateway, [job("c1")], fence=Fence("me", "s", 2000)))
    assert fired == [("c1", True)]
    assert await gateway.redis.zscore(qk.cron_last, "s") == 2000
    for tick, job_id in ((2000, "c2"), (1000, "c3")):
        with pytest.raises(FenceRejected) as rejected:
            await gateway.scripts.run(enqueue_call(gateway, [job(job_id)], fence=Fence("me", "s", tick)))
        assert rejected.value.reason is ScriptCode.FIRED
        assert await gateway.redis.exists(qk.job(job_id)) == 0
    assert await gateway.redis.zscore(qk.cron_last, "s") == 2000


async def test_the_gateway_raises_the_fence_reason_too(gateway: Gateway) -> None:
    with pytest.raises(FenceRejected) as rejected:
        await gateway.enqueue(Q, [job("c")], fence=Fence("me", "s", 1000))
    assert rejected.value.reason is ScriptCode.FENCED


@pytest.mark.parametrize("sharded", [True, False], ids=["spublish", "publish"])
async def test_a_delayed_job_wakes_the_queues_promoters(gateway: Gateway, sharded: bool) -> None:
    """On the queue's wake-up channel, by SPUBLISH or PUBLISH as the flag says."""
    gateway.sharded = sharded
    qk = gateway.keys.queue(Q)
    now = gateway.now_ms()
    async with gateway.subscriber() as subscriber:
        await subscriber.subscribe(qk.wake_channel)
        await gateway.scripts.run(enqueue_call(gateway, [job("later", due_ms=now + 60_000)], now_ms=now))
        messages = []
        for _ in range(50):
            message = await subscriber.get_message(timeout=0.1)
            if message is not None:
                messages.append((message["channel"], message["data"]))
                break
    assert messages == [(qk.wake_channel, qk.delayed)]
