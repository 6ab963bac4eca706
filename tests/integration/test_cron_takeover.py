"""Cron takeover with the default lease: after the leader is SIGKILLed, a follower fires the
next tick within the lease of the leader's last renewal (DESIGN.md: "after a leader dies a
new one takes over within the lock's lease"), and no tick is enqueued twice or late.

Real processes: three scheduler-only workers compete for the lock and a fourth, which is
never killed, runs the tick jobs (so a kill never strands a job mid-run, and every enqueued
tick runs exactly once within the test).
"""

from __future__ import annotations

import inspect
import itertools
import signal
import time
from datetime import datetime
from typing import Any

from engine import Engine
from engine.core.model import JobInfo
from tests.apps.cronapp import ticks_key
from tests.helpers import eventually, start_worker_process, stop_process

# The lease is the Engine default on purpose: the bug only showed with a real-sized lease,
# where a follower's poll interval (a third of it) is seconds long.
DEFAULT_LEASE = float(inspect.signature(Engine).parameters["cron_lease"].default)
# Headroom over the lease for a loaded 2-core machine: waking a few ms after expiry, one
# SET NX round trip and one fenced enqueue, each of which can stall behind other processes.
MARGIN_S = 1.5
# The same, counted from the dead leader's lock expiry (so without the part of the lease that
# ran out before the kill); a follower polling a third of a lease apart lands up to 3.3 s late.
EXPIRY_MARGIN_S = 1.0
SCHEDULE = "every_second"


def _leader_pid(token: str) -> int:
    # Lock token: "<worker id>|<random>", the worker id being "<host>-<pid>-<suffix>".
    return int(token.split("|")[0].rsplit("-", 2)[1])


async def _tick_infos(app: Engine, redis: Any, namespace: str) -> dict[float, tuple[JobInfo, int]]:
    """Every tick run so far (its scheduled second) -> (its job, how many times it ran)."""
    runs = {int(k): int(v) for k, v in (await redis.hgetall(ticks_key(namespace))).items()}
    out: dict[float, tuple[JobInfo, int]] = {}
    for tick, count in runs.items():
        info = await app.job(f"cron-{SCHEDULE}-{tick * 1000}").info()
        assert info is not None, f"tick {tick} ran but its job is gone"
        out[float(tick)] = (info, count)
    return out


def _created(info: JobInfo) -> float:
    assert info.created_at is not None
    return info.created_at.timestamp()


async def test_killed_leader_is_replaced_within_the_default_lease(redis_url: str, namespace: str) -> None:
    assert DEFAULT_LEASE == 10.0
    env = {"TEST_CRON_LEASE": str(DEFAULT_LEASE)}
    app = Engine(redis_url, namespace=namespace)
    schedulers = [
        start_worker_process("tests.apps.cronapp:app", redis_url, namespace, "--cron-only", env=env)
        for _ in range(3)
    ]
    runner = start_worker_process("tests.apps.cronapp:app", redis_url, namespace, "--no-cron", env=env)
    procs = [*schedulers, runner]
    try:
        async with app:
            gateway = app.gateway
            redis = gateway.redis
            lock = gateway.keys.queue("ticks").cron_leader

            async def ticks_run() -> int:
                return int(await redis.hlen(ticks_key(namespace)))

            await eventually(lambda: _at_least(ticks_run, 3), timeout=60, what="3 ticks before the kill")
            token = await redis.get(lock)
            assert token is not None
            victim = next(p for p in schedulers if p.pid == _leader_pid(token))
            victim.send_signal(signal.SIGKILL)
            killed_at = time.time()
            victim.wait(10)
            # What is left of the dead leader's lease: its last renewal plus the lease.
            expires_at = time.time() + await redis.pttl(lock) / 1000

            async def new_leader_ticks() -> list[tuple[float, JobInfo]]:
                infos = await _tick_infos(app, redis, namespace)
                new = [(_created(i), i) for i, _ in infos.values() if _created(i) > killed_at]
                return sorted(new, key=lambda pair: pair[0])

            # Bounded by the behaviour under test plus slack: a regression shows up as a
            # failed assertion on the measured time below, not as a timeout here.
            after = await eventually(
                lambda: _at_least_n(new_leader_ticks, 3),
                timeout=DEFAULT_LEASE + 30,
                interval=0.1,
                what="3 ticks from the new leader",
            )
            new_token = await redis.get(lock)
            # Schedulers first, so the runner (still up) gets to run every tick they enqueued.
            live = [p for p in schedulers if p is not victim]
            for proc in live:
                proc.send_signal(signal.SIGTERM)
            for proc in live:
                assert proc.wait(30) == 0

            async def all_ran() -> bool:
                stats = await app.stats()
                return bool(stats["ticks"]["completed"] == stats["ticks"]["enqueued"])

            await eventually(all_ran, timeout=30, what="every enqueued tick ran")
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(30) == 0
            infos = await _tick_infos(app, redis, namespace)
            stats = await app.stats()
    finally:
        for proc in procs:
            stop_process(proc)

    takeover_s = after[0][0] - killed_at
    past_expiry_s = after[0][0] - expires_at
    print(
        f"\n[cron takeover] lease {DEFAULT_LEASE:.0f} s: first tick by the new leader "
        f"{takeover_s:.3f} s after the SIGKILL (bound {DEFAULT_LEASE + MARGIN_S:.1f} s), "
        f"{past_expiry_s * 1000:.0f} ms after the dead leader's lock expired"
    )
    assert new_token is not None and _leader_pid(new_token) != victim.pid
    assert takeover_s <= DEFAULT_LEASE + MARGIN_S, takeover_s
    # Sharper, as the contract puts it: within the lease of the leader's last renewal, not a
    # follower's poll interval (a third of the lease) past it.
    assert past_expiry_s <= EXPIRY_MARGIN_S, past_expiry_s
    # No tick enqueued twice: job ids are per tick and the enqueued counter counts each add
    # once, so one job per tick means as many adds as distinct ticks; each ran exactly once.
    assert stats["ticks"]["enqueued"] == len(infos)
    assert all(count == 1 for _, count in infos.values()), infos
    # No late ticks: with misfire="latest", the new leader fires the one tick due at takeover
    # (less than a second old for an every-second schedule), never the backlog of the gap.
    for tick, (info, _) in infos.items():
        assert info.scheduled_at is None or abs(info.scheduled_at.timestamp() - tick) < 1e-3
        assert _created(info) - tick <= 1.0 + MARGIN_S, (datetime.fromtimestamp(tick), info)
    ticks = sorted(infos)
    skipped = [b - a for a, b in itertools.pairwise(ticks) if b - a > 1]
    assert len(skipped) <= 1, skipped  # only the leaderless window, once


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def _at_least_n(items: Any, n: int) -> Any:
    found = await items()
    return found if len(found) >= n else None
