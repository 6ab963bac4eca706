"""Acknowledged entries linger in the stream until whole nodes of them can go (finish.lua's
tidy): the waiting count, the live lists and a deletion see past them, the stream goes back to
empty once nothing runs or waits, and behind a job that runs for hours at most LINGER_MAX
linger."""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.core.transitions import Outcome
from engine.inspector.scan import _current
from tests.scripts.support import KEEP, Q, active, waiting
from tests.scripts.test_bury import bury_call
from tests.scripts.test_delete import delete_call

LINGER_MAX = 10_000


def done(row_entry: str, job_id: str) -> Outcome:
    return Outcome(Q, row_entry, job_id, "completed", "null", task="t")


async def lingering(gateway: Gateway) -> int:
    return int(await gateway.redis.get(gateway.keys.queue(Q).acked) or 0)


async def test_entries_linger_while_others_run_and_go_once_nothing_runs_or_waits(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    rows = await active(gateway, "a", "b", "c")
    await waiting(gateway, "d")
    assert await gateway.finish([done(rows[0].entry_id, "a")], KEEP) == 1
    assert await gateway.redis.xlen(qk.stream) == 4 and await lingering(gateway) == 1
    stats = await gateway.queue_stats(Q)
    assert (stats["waiting"], stats["active"]) == (1, 2)
    await gateway.finish([done(rows[1].entry_id, "b"), done(rows[2].entry_id, "c")], KEEP)
    # Nothing runs, but "d" waits: the stream keeps it (and the lingering entries of its node).
    stats = await gateway.queue_stats(Q)
    assert (stats["waiting"], stats["active"]) == (1, 0)
    assert await gateway.redis.xlen(qk.stream) - await lingering(gateway) == 1
    rows = await gateway.fetch([Q], "w1", 10)
    assert [job.job_id for job in rows] == ["d"]
    await gateway.finish([done(rows[0].entry_id, "d")], KEEP)
    assert await gateway.redis.xlen(qk.stream) == 0
    assert await gateway.redis.exists(qk.acked) == 0
    stats = await gateway.queue_stats(Q)
    assert (stats["waiting"], stats["active"], stats["completed"]) == (0, 0, 4)


async def test_whole_nodes_of_done_entries_go_while_later_ones_run(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    ids = [f"j{n}" for n in range(1000)]
    rows = await active(gateway, *ids)
    for first in range(0, 900, 100):
        await gateway.finish([done(r.entry_id, r.job_id) for r in rows[first : first + 100]], KEEP)
    length, left = await gateway.redis.xlen(qk.stream), await lingering(gateway)
    # 900 done, 100 running: nodes (at most 100 entries) of done ones went whole, at most the
    # one the running ones start in lingers.
    assert left < 100 and length == 100 + left
    stats = await gateway.queue_stats(Q)
    assert (stats["waiting"], stats["active"]) == (0, 100)
    await gateway.finish([done(r.entry_id, r.job_id) for r in rows[900:]], KEEP)
    assert await gateway.redis.xlen(qk.stream) == 0 and await lingering(gateway) == 0


async def test_behind_a_long_job_at_most_so_many_linger(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    long, *rows = await active(gateway, "long", "a", "b")
    await gateway.finish([done(rows[0].entry_id, "a")], KEEP)
    assert await gateway.redis.xrange(qk.stream, rows[0].entry_id, rows[0].entry_id)
    # As if LINGER_MAX entries lingered behind "long" already: the next one is deleted.
    await gateway.redis.set(qk.acked, LINGER_MAX)
    await gateway.finish([done(rows[1].entry_id, "b")], KEEP)
    assert not await gateway.redis.xrange(qk.stream, rows[1].entry_id, rows[1].entry_id)
    assert await lingering(gateway) == LINGER_MAX
    await gateway.finish([done(long.entry_id, "long")], KEEP)
    assert await gateway.redis.xlen(qk.stream) == 0 and await gateway.redis.exists(qk.acked) == 0


async def test_the_last_pending_entry_buried_or_dropped_empties_the_stream(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    a, b = await active(gateway, "a", "b")
    await gateway.finish([done(a.entry_id, "a")], KEEP)
    assert await gateway.redis.xlen(qk.stream) == 2
    assert await gateway.scripts.run(bury_call(gateway, b.entry_id, "b", "odd")) is not None
    assert await gateway.redis.xlen(qk.stream) == 0 and await gateway.redis.exists(qk.acked) == 0
    # An entry start.lua drops (its job ended while it waited) with done ones before it.
    (c,) = await active(gateway, "c")
    await waiting(gateway, "d")
    await gateway.finish([done(c.entry_id, "c")], KEEP)
    await gateway.redis.hset(qk.job("d"), mapping={"status": "cancelled"})
    await gateway.redis.hdel(qk.waiting, "d")
    assert len(await gateway.fetch([Q], "w1", 10)) == 0
    assert await gateway.redis.xlen(qk.stream) == 0 and await gateway.redis.exists(qk.acked) == 0


async def test_deleting_a_finished_job_whose_entry_lingers_keeps_the_count(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    rows = await active(gateway, "a", "b")
    await gateway.redis.hset(qk.job("a"), "msg", rows[0].entry_id)  # as a retried job has
    await gateway.finish([done(rows[0].entry_id, "a")], KEEP)
    await waiting(gateway, "c")
    assert await lingering(gateway) == 1
    assert await gateway.scripts.run(delete_call(gateway, "a")) is not None
    assert await lingering(gateway) == 0 and await gateway.redis.xlen(qk.stream) == 2
    stats = await gateway.queue_stats(Q)
    assert (stats["waiting"], stats["active"]) == (1, 1)


def test_a_live_list_skips_entries_that_are_not_their_jobs_current_one() -> None:
    assert _current("1-1", {"status": "waiting", "msg": "1-1"})
    assert _current("1-1", {"status": "active"})  # a fresh job's hash has no msg
    assert not _current("1-1", {"status": "completed"})  # lingering after its outcome
    assert not _current("1-1", {"status": "active", "msg": "2-1"})  # retried: runs on 2-1
    assert not _current("1-1", {"status": "delayed", "msg": "1-1"})  # in the delayed set
    assert not _current("1-1", {})  # its hash expired
