"""start.lua's flow control (engine.core.flow): pause, concurrency slots, the rate; and the
flow hash written by flow.lua."""

from __future__ import annotations

from typing import Any

import anyio

from engine.broker.gateway import Gateway
from engine.core.flow import Limits
from engine.core.transitions import Outcome
from tests.scripts.support import KEEP, WORKER, Q, enqueue_call, job, pending_to, waiting
from tests.scripts.test_start import start_call


async def test_a_paused_queue_reads_nothing_and_holds_what_it_is_given(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.set_flow(Q, {"paused": "1"})
    await waiting(gateway, "a", "b")
    rows = await gateway.scripts.run(start_call(gateway, read=10))
    assert list(rows) == [] and rows.throttle == ("paused", 0, 0, 0)
    assert await pending_to(gateway) == {}  # nothing delivered: the entries wait in the stream

    # Entries a blocking read delivered anyway are held: still pending, untouched.
    read = await gateway.read([Q], WORKER, 10, None)
    pairs = [(entry_id, fields["j"]) for _, entry_id, fields in read]
    rows = await gateway.scripts.run(start_call(gateway, entries=pairs))
    assert [(r.job_id, r.run, r.held) for r in rows] == [("a", False, True), ("b", False, True)]
    assert rows.throttle == ("paused", 0, 0, 0)
    assert len(await pending_to(gateway)) == 2
    h = await gateway.job_hash(Q, "a")
    assert h is not None and h["status"] == "waiting" and h["attempts"] == "0"
    assert await gateway.redis.hexists(qk.waiting, "a")  # held: still a fresh job

    await gateway.set_flow(Q, {"paused": ""})
    rows = await gateway.scripts.run(start_call(gateway, entries=pairs))
    assert [r.run for r in rows] == [True, True] and rows.throttle is None
    assert await gateway.redis.exists(qk.flow) == 0


async def test_concurrency_slots_are_taken_at_the_start_and_given_back_by_the_outcome(
    gateway: Gateway,
) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.set_flow(Q, Limits.declare(Q, concurrency=2).fields())
    await waiting(gateway, *"abcde")
    rows = await gateway.scripts.run(start_call(gateway, read=10))
    assert [r.job_id for r in rows] == ["a", "b"] and rows.throttle == ("concurrency", 0, 2, 0)
    slots = await gateway.redis.zrange(qk.running, 0, -1, withscores=True)
    now = gateway.now_ms()
    assert {entry for entry, _ in slots} == {r.entry_id for r in rows}
    assert all(now + 25_000 < deadline <= now + 31_000 for _, deadline in slots)  # the 30 s lease
    assert list(await gateway.scripts.run(start_call(gateway, read=10))) == []

    await gateway.finish([Outcome(Q, rows[0].entry_id, "a", "completed", "1")], KEEP)
    assert await gateway.redis.zcard(qk.running) == 1
    (row,) = await gateway.scripts.run(start_call(gateway, read=10))
    assert row.job_id == "c"


async def test_a_slot_whose_lease_lapsed_is_free_again(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.set_flow(Q, Limits.declare(Q, concurrency=1).fields())
    await gateway.redis.zadd(qk.running, {"1-1": gateway.now_ms() - 1})  # a dead worker's
    await waiting(gateway, "a")
    (row,) = await gateway.scripts.run(start_call(gateway, read=10))
    assert row.run and await gateway.redis.zrange(qk.running, 0, -1) == [row.entry_id]


async def test_renewing_a_lease_moves_its_slot_deadline(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.set_flow(Q, Limits.declare(Q, concurrency=5).fields())
    await waiting(gateway, "a")
    (row,) = await gateway.scripts.run(start_call(gateway, read=10))
    await gateway.redis.zadd(qk.running, {row.entry_id: 1})
    assert await gateway.renew(WORKER, {Q: [row.entry_id]}) == []
    assert await gateway.redis.zscore(qk.running, row.entry_id) > gateway.now_ms()


async def test_a_rate_spaces_the_starts(gateway: Gateway) -> None:
    await gateway.set_flow(Q, Limits.declare(Q, rate_limit="1/s").fields())
    await waiting(gateway, "a", "b")
    rows = await gateway.scripts.run(start_call(gateway, read=10))
    assert [r.job_id for r in rows] == ["a"]
    assert rows.throttle is not None and rows.throttle.reason == "rate"
    assert 900 <= rows.throttle.wait_ms <= 1000
    rows = await gateway.scripts.run(start_call(gateway, read=10))
    assert list(rows) == [] and rows.throttle is not None and rows.throttle.reason == "rate"


async def test_a_limit_that_does_not_bind_reports_no_reason(gateway: Gateway) -> None:
    await gateway.set_flow(Q, Limits.declare(Q, concurrency=100, rate_limit="1000/s").fields())
    await waiting(gateway, "a", "b")
    rows = await gateway.scripts.run(start_call(gateway, read=2))  # a full read, not cut
    assert [r.job_id for r in rows] == ["a", "b"]
    assert rows.throttle is not None and rows.throttle.reason == ""


async def test_a_garbage_flow_hash_stops_nothing(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.redis.hset(qk.flow, mapping={"concurrency": "lots", "rate_interval": "-3"})
    await waiting(gateway, "a")
    (row,) = await gateway.scripts.run(start_call(gateway, read=10))
    assert row.run
    await gateway.redis.delete(qk.flow)
    await gateway.redis.set(qk.flow, "not a hash")
    await waiting(gateway, "b")
    (row,) = await gateway.scripts.run(start_call(gateway, read=10))
    assert row.run


async def test_entries_enqueued_under_flow_control_are_marked(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "plain")
    await gateway.set_flow(Q, {"paused": "1"})
    await waiting(gateway, "gated")
    entries = await gateway.redis.xrange(qk.stream)
    assert ["g" in fields for _, fields in entries] == [False, True]


async def test_set_flow_reports_what_was_there_and_announces_changes(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    async with gateway.subscriber() as subscriber:
        await subscriber.subscribe(qk.wake_channel)
        assert await gateway.set_flow(Q, {"paused": "1"}) == {"paused": ""}
        assert await _next_message(subscriber, 5.0) == "flow"
        assert await gateway.set_flow(Q, {"paused": "1"}) == {"paused": "1"}  # no change: no notice
        assert await _next_message(subscriber, 0.3) is None


async def _next_message(subscriber: Any, within: float) -> str | None:
    # get_message answers None for the subscription's confirmation too: read until the deadline.
    with anyio.move_on_after(within):
        while True:
            message = await subscriber.get_message(timeout=within)
            if message is not None:
                return str(message["data"])
    return None


async def test_a_full_concurrency_key_holds_its_jobs_and_not_the_others(gateway: Gateway) -> None:
    running = gateway.keys.queue(Q).running
    await gateway.set_flow(Q, Limits.declare(Q, key_concurrency=1).fields())
    await gateway.ensure_group(Q)
    for job_id, key in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        await gateway.scripts.run(enqueue_call(gateway, [job(job_id, concurrency_key=key)]))
    batch = await gateway.fetch([Q], WORKER, 10)
    assert [j.job_id for j in batch] == ["a1", "b1"]
    assert [(q, fields) for q, _, fields in batch.held] == [(Q, {"j": "a2"})]
    assert batch.throttles[Q].key_held == 1 and batch.throttles[Q].reason == ""
    assert await gateway.redis.zcard(running + ":a") == 1
    assert await gateway.redis.hgetall(running + ":keys") == {batch[0].entry_id: "a", batch[1].entry_id: "b"}

    # Renewed with the lease, given back by the outcome; then the held job may start.
    before = await gateway.redis.zscore(running + ":a", batch[0].entry_id)
    await anyio.sleep(0.01)
    assert await gateway.renew(WORKER, {Q: [batch[0].entry_id]}) == []
    assert await gateway.redis.zscore(running + ":a", batch[0].entry_id) > before
    assert list(await gateway.start_entries(WORKER, batch.held)) == []  # a1 still runs
    await gateway.finish([Outcome(Q, batch[0].entry_id, "a1", "completed", "1")], KEEP)
    assert await gateway.redis.zcard(running + ":a") == 0
    assert batch[0].entry_id not in await gateway.redis.hgetall(running + ":keys")
    assert [j.job_id for j in await gateway.start_entries(WORKER, batch.held)] == ["a2"]
