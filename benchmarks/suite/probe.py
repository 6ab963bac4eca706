"""Worker-side instrumentation shared by every system under test (imported by the worker apps).

Per job it costs one lock and a few attribute updates in the worker's own memory; a daemon
thread flushes the counters to the *probe* Redis database (a database of its own, so the
system under test never sees these keys) every ``FLUSH_S`` seconds in one pipeline. So the
benchmark adds no Redis round trip per job: with one per job, a measurement tops out near
8,000 jobs/s on a 2-core machine whatever the system does.

What it records, per worker process:
- ``done``: jobs whose body finished successfully (INCRBY of the delta since the last flush),
  and the wall-clock time of the latest one (``last``, a hash field per process);
- ``lat``: enqueue-to-start latencies (seconds), pushed in batches;
- the start gate: the first job a process runs announces the process in ``ready`` and waits
  until the observer sets ``go``. Jobs fetched before that wait too, so a drain is timed from
  the moment every worker process is up and holding work, excluding interpreter start-up.

Configuration from the environment: ``BENCH_PROBE_URL`` (a redis:// URL with its own db number)
and ``BENCH_GATE`` ("1": gate the first jobs; "0": run at once, e.g. for the latency scenario).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

FLUSH_S = 0.01
PREFIX = "probe:"
DONE, LAST, READY, GO, LAT = (PREFIX + k for k in ("done", "last", "ready", "go", "lat"))

_lock = threading.Lock()
_done = 0
_flushed = 0
_last = 0.0
_lat: list[float] = []
_opened = threading.Event()
_started = False
_pid = 0
_on_open: list[Callable[[], None]] = []


def on_gate_open(callback: Callable[[], None]) -> None:
    """Run ``callback`` in the event-loop thread once the gate opens (the profiler's start)."""
    _on_open.append(callback)


def _opened_now() -> None:
    while _on_open:
        _on_open.pop()()


def _ensure_started() -> None:
    global _started, _pid
    if _started and _pid == os.getpid():
        return
    with _lock:
        if _started and _pid == os.getpid():
            return
        # (Re)start after a fork too: threads do not survive fork().
        _started, _pid = True, os.getpid()
        if os.environ.get("BENCH_GATE", "1") != "1":
            _opened.set()
        threading.Thread(target=_flusher, name="bench-probe", daemon=True).start()


def _flusher() -> None:
    import redis

    global _flushed
    client = redis.Redis.from_url(os.environ.get("BENCH_PROBE_URL", "redis://127.0.0.1:6379/15"))
    pid = str(os.getpid())
    announced = False
    while True:
        try:
            if not _opened.is_set():
                if not announced:
                    client.sadd(READY, pid)
                    announced = True
                if client.exists(GO):
                    _opened.set()
            with _lock:
                done, last, lat = _done, _last, _lat[:]
                del _lat[:]
            if done != _flushed or lat:
                pipe = client.pipeline(transaction=False)
                if lat:
                    pipe.rpush(LAT, *lat)
                if done != _flushed:
                    pipe.hset(LAST, pid, repr(last))
                    pipe.incrby(DONE, done - _flushed)
                pipe.execute()
                _flushed = done
        except Exception:  # a restarted probe server must not kill the worker's jobs
            time.sleep(0.2)
        time.sleep(FLUSH_S)


def done() -> None:
    """Count one successfully finished job (call at the end of the job body)."""
    global _done, _last
    with _lock:
        _done += 1
        _last = time.time()


def latency(enqueued_at: float) -> None:
    """Record the enqueue-to-start latency of this job (call first in the job body)."""
    now = time.time()
    _ensure_started()
    with _lock:
        _lat.append(now - enqueued_at)


def gate_sync() -> None:
    """Block (a worker thread) until the observer opens the gate."""
    if _opened.is_set():
        return
    _ensure_started()
    _opened.wait()


_gates: dict[asyncio.AbstractEventLoop, tuple[asyncio.Event, asyncio.Task[None]]] = {}


async def gate_async() -> None:
    """Wait (on the event loop) until the observer opens the gate.

    One task per event loop polls the threading.Event the flusher thread sets (no event loop
    can await it); held jobs wait on an asyncio.Event. Each of 500 held jobs polling on its
    own kept the loop busy enough to starve the flusher thread of the GIL, so it noticed the
    open gate late, by a varying amount, inside the timed window: drains of I/O-bound jobs
    measured anywhere from 1,700 to 22,000 jobs/s from one repetition to the next.
    """
    if _opened.is_set():
        return
    _ensure_started()
    loop = asyncio.get_running_loop()
    if loop not in _gates:
        opened = asyncio.Event()

        async def poll() -> None:
            while not _opened.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            opened.set()
            _opened_now()

        _gates[loop] = (opened, loop.create_task(poll()))
    await _gates[loop][0].wait()


# --- the job bodies every system runs (each worker app wraps them in its own task API) ---


async def noop_async(i: int) -> None:
    await gate_async()
    done()


def noop_sync(i: int) -> None:
    gate_sync()
    done()


async def io_async(i: int) -> None:
    await gate_async()
    await asyncio.sleep(0.01)
    done()


def io_sync(i: int) -> None:
    gate_sync()
    time.sleep(0.01)
    done()


_failed: set[int] = set()


def should_fail(i: int) -> bool:
    """30% of the jobs fail their first attempt (tracked per worker process: the failure
    scenario runs one worker process, so the retry comes back to the same one)."""
    if i % 10 < 3 and i not in _failed:
        _failed.add(i)
        return True
    return False


async def latency_async(enqueued_at: float) -> None:
    latency(enqueued_at)
    done()


def latency_sync(enqueued_at: float) -> None:
    latency(enqueued_at)
    done()


class InjectedFailure(Exception):
    """The failure the failure-heavy scenario injects."""
