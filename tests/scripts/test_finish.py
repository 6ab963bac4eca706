"""finish.lua through bindings.finish: each kind of outcome, and an outcome that lost its entry."""

from __future__ import annotations

import pytest

from engine.broker.gateway import Gateway
from engine.broker.scripts import bindings
from engine.broker.scripts.runner import Call
from engine.core.errors import ScriptCode
from engine.core.model import JobInfo
from engine.core.transitions import Outcome, Retention
from tests.scripts.support import KEEP, Q, active, pending_to


def finish_call(gateway: Gateway, outcomes: list[Outcome], retention: Retention = KEEP) -> Call[list[bool]]:
    qk = gateway.keys.queue(Q)
    now = gateway.now_ms()
    return bindings.finish(
        stream=qk.stream,
        delayed=qk.delayed,
        dlq=qk.dlq,
        stats=qk.stats,
        outbox=qk.outbox,
        joblog_flag=qk.joblog_flag,
        throughput=qk.throughput(now // 60_000),
        outbox_extra=qk.outbox_extra,
        running=qk.running,
        waiters=qk.waiters,
        cancels=qk.cancels,
        logged=qk.logged,
        job_prefix=qk.job_prefix,
        now_ms=now,
        completed_retention_ms=retention.completed_ms,
        failed_retention_ms=retention.failed_ms,
        done_channel_prefix=qk.done_channel(""),
        wake_channel=qk.wake_channel,
        queue=Q,
        sharded=bool(gateway.sharded),
        outcomes=outcomes,
    )


async def test_each_kind_of_outcome_is_recorded_and_acknowledged(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    rows = await active(gateway, "ok", "again", "bad", "stop")
    entries = {row.job_id: row.entry_id for row in rows}
    due = gateway.now_ms() + 60_000
    outcomes = [
        Outcome(Q, entries["ok"], "ok", "completed", "42", ran_ms=3),
        Outcome(Q, entries["again"], "again", "retry", "flaky", "tb", due_ms=due),
        Outcome(Q, entries["bad"], "bad", "failed", "boom", "tb"),
        Outcome(Q, entries["stop"], "stop", "cancelled", "asked to"),
    ]
    assert await gateway.scripts.run(finish_call(gateway, outcomes)) == [True] * 4
    status = {job_id: await gateway.redis.hgetall(qk.job(job_id)) for job_id in entries}
    assert (status["ok"]["status"], status["ok"]["result"]) == ("completed", "42")
    assert (status["again"]["status"], status["again"]["due"]) == ("delayed", str(due))
    assert await gateway.redis.zscore(qk.delayed, "again") == due
    assert status["bad"]["status"] == "failed"
    ((dead_id, dead),) = await gateway.redis.xrange(qk.dlq)
    assert (status["bad"]["dlq"], dead["j"], dead["error"], dead["traceback"]) == (
        dead_id,
        "bad",
        "boom",
        "tb",
    )
    assert (dead["task"], dead["attempts"]) == ("t", "1")
    assert (status["stop"]["status"], status["stop"]["error"]) == ("cancelled", "asked to")
    assert await pending_to(gateway) == {}
    assert await gateway.redis.xlen(qk.stream) == 0
    stats = await gateway.redis.hgetall(qk.stats)
    assert [stats[k] for k in ("completed", "retried", "failed", "cancelled")] == ["1", "1", "1", "1"]


async def test_an_outcome_whose_entry_is_no_longer_pending_changes_nothing(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    (row,) = await active(gateway, "a")
    first = Outcome(Q, row.entry_id, "a", "completed", "1")
    assert await gateway.scripts.run(finish_call(gateway, [first])) == [True]
    late = Outcome(Q, row.entry_id, "a", "failed", "too late")
    assert await gateway.scripts.run(finish_call(gateway, [late])) == [False]
    assert await gateway.redis.hget(qk.job("a"), "status") == "completed"
    assert await gateway.redis.xlen(qk.dlq) == 0


async def test_a_retention_expires_the_finished_job(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    (row,) = await active(gateway, "a")
    retention = Retention(completed_ms=60_000, failed_ms=0)
    await gateway.scripts.run(
        finish_call(gateway, [Outcome(Q, row.entry_id, "a", "completed", "1")], retention)
    )
    assert 0 < await gateway.redis.pttl(qk.job("a")) <= 60_000


async def test_the_gateway_counts_the_recorded(gateway: Gateway) -> None:
    (row,) = await active(gateway, "a")
    outcome = Outcome(Q, row.entry_id, "a", "completed", "1")
    assert await gateway.finish([outcome], KEEP) == 1
    assert await gateway.finish([outcome], KEEP) == 0


@pytest.mark.parametrize("sharded", [True, False], ids=["spublish", "publish"])
async def test_outcomes_are_announced_on_the_queues_channels(gateway: Gateway, sharded: bool) -> None:
    """A final outcome on the job's done channel, a retry on the wake-up channel: the queue's
    own channels, by SPUBLISH (Redis >= 7.0, Valkey) or PUBLISH (6.2) as the flag says."""
    gateway.sharded = sharded
    qk = gateway.keys.queue(Q)
    rows = await active(gateway, "ok", "again")
    entries = {row.job_id: row.entry_id for row in rows}
    await gateway.mark_waiters(Q, 60_000)  # someone waits: job ends are announced
    async with gateway.subscriber() as subscriber:
        await subscriber.subscribe(qk.done_channel("ok"), qk.wake_channel)
        outcomes = [
            Outcome(Q, entries["ok"], "ok", "completed", "42"),
            Outcome(Q, entries["again"], "again", "retry", "flaky", "tb", due_ms=gateway.now_ms() + 60_000),
        ]
        assert await gateway.scripts.run(finish_call(gateway, outcomes)) == [True, True]
        got: dict[str, str] = {}
        for _ in range(50):  # the subscription's own replies are hidden: poll a while
            message = await subscriber.get_message(timeout=0.1)
            if message is not None:
                got[message["channel"]] = message["data"]
            if len(got) == 2:
                break
    assert got == {qk.done_channel("ok"): "completed", qk.wake_channel: qk.delayed}


async def test_no_one_waiting_no_job_end_is_announced(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    (row,) = await active(gateway, "quiet")
    async with gateway.subscriber() as subscriber:
        await subscriber.subscribe(qk.done_channel("quiet"))
        done = Outcome(Q, row.entry_id, "quiet", "completed", "1")
        assert await gateway.scripts.run(finish_call(gateway, [done])) == [True]
        for _ in range(5):
            assert await subscriber.get_message(timeout=0.05) is None


async def test_counters_are_kept_per_task_and_each_attempt_keeps_its_worker(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    rows = await active(gateway, "a", "b", "c", consumer="w1")
    entries = {row.job_id: row.entry_id for row in rows}
    outcomes = [
        Outcome(Q, entries["a"], "a", "completed", "1", ran_ms=3, task="send"),
        Outcome(
            Q, entries["b"], "b", "retry", "flaky", "tb", due_ms=gateway.now_ms(), ran_ms=700, task="send"
        ),
        Outcome(Q, entries["c"], "c", "failed", "boom", "tb", ran_ms=20, task="bill"),
    ]
    assert await gateway.scripts.run(finish_call(gateway, outcomes)) == [True] * 3
    stats = await gateway.redis.hgetall(qk.stats)
    per_task = {k: v for k, v in stats.items() if k.startswith(("t:", "td:"))}
    assert per_task == {
        "t:send:completed": "1",
        "t:send:retried": "1",
        "t:bill:failed": "1",
        "td:send:0.005": "1",
        "td:send:1": "1",
        "td:send:sum_ms": "703",
        "td:bill:0.025": "1",
        "td:bill:sum_ms": "20",
    }
    assert stats["completed"] == stats["retried"] == stats["failed"] == "1"

    # The retried job runs again elsewhere: both attempts' workers stay on the job.
    await gateway.promote([Q])
    (again,) = await gateway.fetch([Q], "w2", 10)
    await gateway.scripts.run(
        finish_call(gateway, [Outcome(Q, again.entry_id, "b", "completed", "2", task="send")])
    )
    info = await gateway.redis.hgetall(qk.job("b"))
    assert (info["worker"], info["ran"]) == ("w2", "w1\n")
    assert JobInfo.from_hash("b", Q, info).attempt_workers == ["w1", "w2"]


async def test_log_lines_expire_with_their_job(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    rows = await active(gateway, "chatty", "silent")
    entries = {row.job_id: row.entry_id for row in rows}
    await gateway.append_log(Q, "chatty", "info", "hello", 100)
    outcomes = [Outcome(Q, entries[j], j, "completed", "1") for j in ("chatty", "silent")]
    retention = Retention(completed_ms=60_000, failed_ms=0)
    assert await gateway.scripts.run(finish_call(gateway, outcomes, retention)) == [True, True]
    for job_id in ("chatty", "silent"):
        assert 0 < await gateway.redis.pttl(qk.job(job_id)) <= 60_000
    assert 0 < await gateway.redis.pttl(qk.logs("chatty")) <= 60_000
    assert await gateway.redis.exists(qk.logs("silent")) == 0
    assert await gateway.redis.exists(qk.logged) == 0  # no running job has lines now
    # A line logged after the job's end goes when the job goes.
    await gateway.append_log(Q, "silent", "info", "late", 100)
    assert 0 < await gateway.redis.pttl(qk.logs("silent")) <= 60_000


async def test_with_the_job_log_on_each_outcome_is_an_event_of_the_next_version(gateway: Gateway) -> None:
    """The event carries the job's fields as they were, and its version is the hash's next."""
    import json

    qk = gateway.keys.queue(Q)
    await gateway.switch_on_joblog([Q])
    rows = await active(gateway, "ok", "bad")
    entries = {row.job_id: row.entry_id for row in rows}
    outcomes = [
        Outcome(Q, entries["ok"], "ok", "completed", "1"),
        Outcome(Q, entries["bad"], "bad", "failed", "boom", "tb"),
    ]
    assert await gateway.scripts.run(finish_call(gateway, outcomes)) == [True, True]
    (*_, (_, entry)) = await gateway.redis.xrange(qk.outbox)
    events = {e["j"]: e for e in json.loads(entry["b"])}
    for job_id, kind in (("ok", "completed"), ("bad", "failed")):
        e = events[job_id]
        assert (e["e"], e["task"], e["attempts"], e["v"], e["worker"]) == (kind, "t", "1", "2", "w1")
        assert await gateway.redis.hget(qk.job(job_id), "v") == "2"
    assert events["bad"]["error"] == "boom"
    ((_, dead),) = await gateway.redis.xrange(qk.dlq)  # its task and attempts, read once for both
    assert (dead["j"], dead["task"], dead["attempts"]) == ("bad", "t", "1")


async def test_a_cancel_while_it_ran_wins_over_its_outcome(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    rows = await active(gateway, "stopped", "other")
    assert await gateway.cancel(Q, "stopped", KEEP) is ScriptCode.CANCEL_REQUESTED
    assert await gateway.redis.sismember(qk.cancels, "stopped")
    outcomes = [Outcome(Q, row.entry_id, row.job_id, "completed", "1") for row in rows]
    assert await gateway.scripts.run(finish_call(gateway, outcomes)) == [True, True]
    assert await gateway.redis.hget(qk.job("stopped"), "status") == "cancelled"
    assert await gateway.redis.hget(qk.job("other"), "status") == "completed"
    assert await gateway.redis.exists(qk.cancels) == 0
