"""start.lua through bindings.start: reading and starting, skipping, and poison entries."""

from __future__ import annotations

from collections.abc import Sequence

from engine.broker.gateway import Gateway
from engine.broker.scripts import bindings
from engine.broker.scripts.bindings import StartRow
from engine.broker.scripts.runner import Call
from engine.core.errors import ScriptCode
from engine.core.transitions import Outcome
from tests.scripts.support import KEEP, PAYLOAD, WORKER, Q, enqueue_call, job, pending_to, waiting


def start_call(
    gateway: Gateway,
    *,
    read: int | None = None,
    entries: Sequence[tuple[str, str] | tuple[str, str, Sequence[str]]] | None = None,
) -> Call[list[StartRow]]:
    qk = gateway.keys.queue(Q)
    return bindings.start(
        stream=qk.stream,
        dlq=qk.dlq,
        flow=qk.flow,
        running=qk.running,
        rate=qk.rate,
        waiting=qk.waiting,
        joblog_flag=qk.joblog_flag,
        job_prefix=qk.job_prefix,
        lease_ms=30_000,
        worker=WORKER,
        entries=entries or (),
        read=read,
    )


async def test_read_starts_new_entries_and_moves_the_payload_into_the_hash(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "a", "b")
    rows = await gateway.scripts.run(start_call(gateway, read=10))
    assert [(r.job_id, r.run, r.task, r.payload) for r in rows] == [
        ("a", True, "t", PAYLOAD.decode()),
        ("b", True, "t", PAYLOAD.decode()),
    ]
    attempts, timeout, max_attempts, tick, created = rows[0].options
    assert (attempts, timeout, max_attempts, tick) == (1, "", "", "")
    assert int(created) > 0
    h = await gateway.redis.hgetall(qk.job("a"))
    assert (h["status"], h["worker"], h["payload"]) == ("active", WORKER, PAYLOAD.decode())
    assert await pending_to(gateway) == {rows[0].entry_id: WORKER, rows[1].entry_id: WORKER}


async def test_a_fresh_job_gets_its_hash_from_its_entry_when_it_starts(gateway: Gateway) -> None:
    """Read by the script or given by a blocking read: the hash holds what it was enqueued
    with, and it leaves the index of waiting jobs. With the job log on, the hash starts at
    version 1 (its enqueued event's)."""
    qk = gateway.keys.queue(Q)
    await gateway.ensure_group(Q)
    options = {"timeout": 2.5, "max_attempts": 3, "tick_ms": 7, "concurrency_key": "k"}
    await gateway.scripts.run(enqueue_call(gateway, [job("a", **options), job("b", **options)]))
    await gateway.switch_on_joblog([Q])
    (row_a,) = await gateway.scripts.run(start_call(gateway, read=1))
    ((_, entry_b, _),) = await gateway.read([Q], WORKER, 10, None)
    (row_b,) = await gateway.scripts.run(start_call(gateway, entries=[(entry_b, "b")]))
    for row in (row_a, row_b):
        assert (row.run, row.payload, row.options[:4]) == (True, PAYLOAD.decode(), (1, "2.5", "3", "7"))
        h = await gateway.redis.hgetall(qk.job(row.job_id))
        assert h.pop("processed")
        assert h == {
            "task": "t",
            "created": row.entry_id.split("-")[0],
            "v": "1",
            "timeout": "2.5",
            "max_attempts": "3",
            "tick": "7",
            "ck": "k",
            "status": "active",
            "worker": WORKER,
            "attempts": "1",
            "payload": PAYLOAD.decode(),
        }
    assert await gateway.redis.exists(qk.waiting) == 0


async def test_a_fresh_job_given_with_its_fields_gets_a_short_row(gateway: Gateway) -> None:
    """Its reader has what the row would repeat: the gateway makes the job from the entry."""
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "a")
    ((_, entry_id, fields),) = await gateway.read([Q], WORKER, 10, None)
    flat = [x for item in fields.items() for x in item]
    rows = await gateway.scripts.run(start_call(gateway, entries=[(entry_id, "a", flat)]))
    assert rows == [StartRow(entry_id, "a", True, fresh=True)]
    assert await gateway.redis.hget(qk.job("a"), "payload") == PAYLOAD.decode()
    await gateway.redis.delete(qk.job("a"))
    await waiting(gateway, "b")
    ((_, entry_id, fields),) = await gateway.read([Q], WORKER, 10, None)
    (job,) = await gateway.start_entries(WORKER, [(Q, entry_id, fields)])
    assert (job.job_id, job.task, job.payload, job.attempt, job.confirmed) == (
        "b",
        "t",
        PAYLOAD.decode(),
        1,
        None,
    )
    assert await gateway.scripts.run(start_call(gateway, read=10)) == []  # drained


async def test_one_read_starts_fresh_and_other_entries_each_as_it_must(gateway: Gateway) -> None:
    """Fresh jobs are started in bulk, the others one by one: a cancelled fresh job is
    skipped, one whose key is not a hash dead-lettered, a retried job (its entry holds only
    its id) runs its next attempt from its hash; each row says so, whatever the mix."""
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "a", "cancelled", "wrongtype")
    await gateway.redis.hdel(qk.waiting, "cancelled")
    await gateway.redis.hset(qk.job("cancelled"), "status", "cancelled")
    await gateway.redis.set(qk.job("wrongtype"), "a string, not a hash")
    await gateway.redis.hset(
        qk.job("retried"), mapping={"status": "delayed", "task": "t", "attempts": "2", "payload": "[]"}
    )
    await gateway.redis.xadd(qk.stream, {"j": "retried"})
    await waiting(gateway, "b")
    rows = await gateway.scripts.run(start_call(gateway, read=10))
    ran = {r.job_id: (r.run, r.options[0] if r.run else None) for r in rows}
    assert ran == {
        "a": (True, 1),
        "b": (True, 1),
        "retried": (True, 3),
        "cancelled": (False, None),
        "wrongtype": (False, None),
    }
    ((_, dead),) = await gateway.redis.xrange(qk.dlq)
    assert (dead["j"], dead["error"]) == ("wrongtype", "job data unreadable: the job's key is not a hash")
    assert await gateway.redis.hlen(qk.waiting) == 0
    assert set(await pending_to(gateway)) == {r.entry_id for r in rows if r.run}


async def test_a_fresh_job_given_with_its_fields_whose_key_is_not_a_hash_is_dead_lettered(
    gateway: Gateway,
) -> None:
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "a")
    await gateway.redis.set(qk.job("a"), "a string, not a hash")
    ((_, entry_id, fields),) = await gateway.read([Q], WORKER, 10, None)
    flat = [x for item in fields.items() for x in item]
    assert await gateway.scripts.run(start_call(gateway, entries=[(entry_id, "a", flat)])) == [
        StartRow(entry_id, "a", False)
    ]
    ((_, dead),) = await gateway.redis.xrange(qk.dlq)
    assert dead["error"] == "job data unreadable: the job's key is not a hash"
    assert await pending_to(gateway) == {}


async def test_entries_read_elsewhere_start_by_id(gateway: Gateway) -> None:
    await waiting(gateway, "a")
    ((_, entry_id, fields),) = await gateway.read([Q], WORKER, 10, None)
    (row,) = await gateway.scripts.run(start_call(gateway, entries=[(entry_id, fields["j"])]))
    assert (row.entry_id, row.job_id, row.run) == (entry_id, "a", True)


async def test_a_cancelled_job_is_skipped_and_its_entry_dropped(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "a")
    ((_, entry_id, _),) = await gateway.read([Q], WORKER, 10, None)
    assert await gateway.cancel(Q, "a", KEEP) is ScriptCode.DONE
    rows = await gateway.scripts.run(start_call(gateway, entries=[(entry_id, "a")]))
    assert rows == [StartRow(entry_id, "a", False)]
    assert await gateway.redis.xlen(qk.stream) == 0
    assert await pending_to(gateway) == {}
    assert await gateway.redis.xlen(qk.dlq) == 0


async def test_poison_entries_go_to_the_dlq_with_the_reason(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.ensure_group(Q)
    await gateway.redis.xadd(qk.stream, {"x": "no job id"})
    await gateway.redis.xadd(qk.stream, {"j": "gone"})
    await gateway.redis.xadd(qk.stream, {"j": "wrongtype"})
    await gateway.redis.set(qk.job("wrongtype"), "a string, not a hash")
    rows = await gateway.scripts.run(start_call(gateway, read=10))
    assert [(r.job_id, r.run) for r in rows] == [("", False), ("gone", False), ("wrongtype", False)]
    errors = [fields["error"] for _, fields in await gateway.redis.xrange(qk.dlq)]
    assert errors[:2] == ["stream entry has no job id", "job data missing"]
    assert errors[2].startswith("job data unreadable")
    assert await pending_to(gateway) == {}


async def test_a_fresh_job_whose_key_is_not_a_hash_is_dead_lettered(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await waiting(gateway, "a", "b")
    await gateway.redis.set(qk.job("a"), "a string, not a hash")
    rows = await gateway.scripts.run(start_call(gateway, read=10))
    assert [(r.job_id, r.run) for r in rows] == [("a", False), ("b", True)]
    ((_, dead),) = await gateway.redis.xrange(qk.dlq)
    assert (dead["j"], dead["error"]) == ("a", "job data unreadable: the job's key is not a hash")


async def test_the_gateway_starts_only_the_runnable(gateway: Gateway) -> None:
    await waiting(gateway, "a", "b")
    await gateway.redis.hset(gateway.keys.queue(Q).job("b"), "status", "cancelled")
    await gateway.redis.hdel(gateway.keys.queue(Q).waiting, "b")  # no longer fresh: its hash says
    started = await gateway.fetch([Q], WORKER, 10)
    assert [(s.job_id, s.attempt, s.payload) for s in started] == [("a", 1, PAYLOAD.decode())]


async def test_a_read_takes_the_lanes_lowest_priority_number_first(gateway: Gateway) -> None:
    await waiting(gateway, "plain1", "plain2")
    for job_id, priority in (("late", 9), ("urgent", 0), ("soon", 3)):
        await gateway.scripts.run(enqueue_call(gateway, [job(job_id, priority=priority)]))
    assert await gateway.refresh_lanes([Q]) == [Q]
    assert gateway.lanes_of(Q) == (f"{Q}!0", f"{Q}!3", Q, f"{Q}!9")
    batch = await gateway.fetch([Q], WORKER, 4)
    assert [(j.job_id, j.queue) for j in batch] == [
        ("urgent", f"{Q}!0"),
        ("soon", f"{Q}!3"),
        ("plain1", Q),
        ("plain2", Q),
    ]
    # Each entry is pending in its lane's stream, where its outcome acknowledges it.
    await gateway.finish([Outcome(j.queue, j.entry_id, j.job_id, "completed", "1") for j in batch], KEEP)
    assert await pending_to(gateway) == {}
    assert [j.job_id for j in await gateway.fetch([Q], WORKER, 4)] == ["late"]


async def test_an_expired_job_is_reported_not_started(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    now = gateway.now_ms()
    await gateway.ensure_group(Q)
    await gateway.scripts.run(enqueue_call(gateway, [job("old", expires_ms=now - 1)]))
    await gateway.scripts.run(enqueue_call(gateway, [job("new", expires_ms=now + 60_000)]))
    rows = await gateway.scripts.run(start_call(gateway, read=10))
    assert [(r.job_id, r.run, r.expired) for r in rows] == [("old", False, True), ("new", True, False)]
    h = await gateway.redis.hgetall(qk.job("old"))
    assert (h["status"], h["attempts"]) == ("waiting", "0")  # left for the worker to record
    assert len(await pending_to(gateway)) == 2
