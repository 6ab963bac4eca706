"""The worker pool (``--processes``, ``--max-jobs-per-process``): real supervisors, real
children, real Redis; every wait polls with a deadline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from engine import ConfigurationError, Engine, JobContext
from engine.cli.worker import child_argv, worker_parser
from engine.core.model import WorkerBeat
from engine.worker import pool
from tests.apps.pool_app import pids_key, runs_key, whoami
from tests.helpers import ROOT, enqueue_by_spec, eventually, free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads processes from /proc")

APP = "tests.apps.pool_app:app"


class Supervisor:
    """A ``python -m engine.worker APP --processes ...`` process, its output in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> set[int]:
        return children_of(self.pid)


@pytest.fixture
def start_pool(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[Any]:
    started: list[Supervisor] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Supervisor:
        log = tmp_path / f"pool-{len(started)}.log"
        full_env = {
            **os.environ,
            "ENGINE_REDIS_URL": redis_url,
            "ENGINE_NAMESPACE": namespace,
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine.worker", APP, "--log-json", *args],
                cwd=ROOT,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(Supervisor(proc, log))
        return started[-1]

    yield start
    for supervisor in started:
        children = supervisor.children()
        if supervisor.proc.poll() is None:
            supervisor.proc.send_signal(signal.SIGTERM)
            try:
                supervisor.proc.wait(15)
            except subprocess.TimeoutExpired:
                supervisor.proc.kill()
                supervisor.proc.wait(5)
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state, ppid = _stat(int(entry.name))
            if ppid == pid and state not in ("", "Z"):
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    return _stat(pid)[0] not in ("", "Z")  # a zombie has exited, only its parent has not looked


def ignores_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    (mask,) = (line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


def _stat(pid: int) -> tuple[str, int]:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return "", 0
    return fields[0], int(fields[1])


async def beats(app: Engine, supervisor: Supervisor) -> dict[str, int]:
    """The supervisor's children that have published a heartbeat: name -> pid."""
    prefix = f"{socket.gethostname()}-{supervisor.pid}-"
    decoded = [msgspec.json.decode(raw, type=WorkerBeat) for raw in (await app.gateway.beats()).values()]
    return {beat.id: beat.pid for beat in decoded if beat.id.startswith(prefix)}


async def pids_that_ran(app: Engine) -> dict[str, int]:
    raw = await app.gateway.redis.hgetall(pids_key(app.namespace))
    return {job_id: int(pid) for job_id, pid in raw.items()}


async def runs(app: Engine) -> dict[str, int]:
    raw = await app.gateway.redis.hgetall(runs_key(app.namespace))
    return {job_id: int(count) for job_id, count in raw.items()}


async def completed(app: Engine, n: int) -> bool:
    return (await app.stats())["default"]["completed"] >= n


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return await anyio.to_thread.run_sync(proc.wait, timeout)


# --- the command line's edge ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--processes", "0"],
        ["--processes", "-1"],
        ["--processes", "x"],
        ["--max-jobs-per-process", "0"],
        ["--max-jobs-per-process", "x"],
    ],
)
def test_bad_values_exit_2_with_one_error_line(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "engine.worker", APP, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and args[0] in errors[0], result.stderr


def test_bad_app_and_unreachable_redis_are_one_line_in_pool_mode_too() -> None:
    def run(spec: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.worker", spec, "--processes", "2"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            capture_output=True,
            text=True,
            timeout=30,
        )

    for result, code, words in (
        (run("tests.apps.pool_app:missing", {}), 2, "has no attribute 'missing'"),
        (run(APP, {"ENGINE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}), 1, "cannot reach Redis"),
    ):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == code and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ") and words in lines[0]


def test_children_get_the_same_options_less_processes() -> None:
    parser = worker_parser()
    argv = [APP, "--queues", "a,b", "--concurrency", "7", "--grace-period", "0", "--no-cron"]
    argv += ["--no-shipper", "--log-level", "debug", "--log-json", "--processes", "3"]
    argv += ["--max-jobs-per-process", "9"]
    args = parser.parse_args(argv)
    child = parser.parse_args(child_argv(parser, args))
    assert "--processes" not in child_argv(parser, args)
    assert {**vars(child), "processes": 3} == vars(args)
    assert parser.parse_args([APP, "--processes", "auto"]).processes == pool.cpu_count()


# --- the Worker's max_jobs and the Pool class ----------------------------------------------


async def test_worker_stops_itself_after_max_jobs(app: Engine) -> None:
    @app.task(timeout=5)
    async def noop(ctx: JobContext, n: int) -> int:
        return n

    for bad in (0, -1, True, 2.0):
        with pytest.raises(ConfigurationError, match="max_jobs"):
            app.worker(max_jobs=bad)
    async with app:
        await noop.enqueue_many([(i,) for i in range(100)])
        worker = app.worker(concurrency=1, max_jobs=3, handle_signals=False)
        with anyio.fail_after(10):
            await worker.run()  # returns by itself
        waiting = (await app.stats())["default"]["waiting"]
    # It stops fetching once 3 outcomes are recorded; what it holds by then still finishes.
    assert worker.processed >= 3 and 0 < waiting <= 100 - worker.processed


async def test_pool_backs_off_a_child_that_keeps_dying() -> None:
    supervisor = pool.Pool([sys.executable, "-c", "raise SystemExit(3)"], 1, handle_signals=False)
    async with anyio.create_task_group() as group:
        group.start_soon(supervisor.run)
        began = time.monotonic()
        slot = supervisor._slots[0]
        await eventually(lambda: _true(slot.generation >= 3), timeout=10, what="three restarts")
        # Three restarts after waits of ~0.1, ~0.2 and ~0.4 s (each at least 80% of that).
        assert time.monotonic() - began >= 0.8 * (0.1 + 0.2 + 0.4)
        assert slot.failures >= 3
        supervisor.stop()


async def test_pool_kills_a_child_that_outlives_the_grace_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "SHUTDOWN_MARGIN_S", 0.2)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    supervisor = pool.Pool([sys.executable, "-c", stubborn], 2, grace_period=0.3, handle_signals=False)
    async with anyio.create_task_group() as group:
        group.start_soon(supervisor.run)

        async def both_ignore_sigterm() -> list[int]:
            pids = supervisor.pids
            return pids if len(pids) == 2 and all(map(ignores_sigterm, pids)) else []

        pids = await eventually(both_ignore_sigterm, what="2 children ignoring SIGTERM")
        began = time.monotonic()
        supervisor.stop()
    assert 0.5 <= time.monotonic() - began < 5
    assert not any(alive(pid) for pid in pids)


async def test_a_failing_supervisor_leaves_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    supervisor = pool.Pool([sys.executable, "-c", "import time; time.sleep(60)"], 2, handle_signals=False)
    pids: list[int] = []

    async def fail_once_both_are_up() -> None:
        pids.extend(
            await eventually(lambda: _true(len(supervisor.pids) == 2 and supervisor.pids), what="2 up")
        )
        raise RuntimeError("the supervisor breaks")

    monkeypatch.setattr(supervisor, "_deadline", fail_once_both_are_up)
    with pytest.raises(ExceptionGroup) as failure, anyio.fail_after(10):
        await supervisor.run()
    assert failure.group_contains(RuntimeError, match="the supervisor breaks")
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


async def _true(value: Any) -> Any:
    return value


# --- real pools ----------------------------------------------------------------------------


async def test_jobs_run_in_three_distinct_processes(app: Engine, start_pool: Any) -> None:
    supervisor = start_pool("--processes", "3", "--concurrency", "2")
    async with app:
        children = await eventually(
            lambda: _at_least(beats(app, supervisor), 3), timeout=20, what="3 children up"
        )
        assert len(set(children.values())) == 3 and supervisor.pid not in children.values()
        await enqueue_by_spec(app, whoami, [((i, 0.05), {}) for i in range(60)])
        await eventually(lambda: completed(app, 60), timeout=20, what="60 jobs done")
        ran = await pids_that_ran(app)
    assert set(ran.values()) == set(children.values())
    assert set(children.values()) == supervisor.children()


async def test_a_sigkilled_child_is_replaced(app: Engine, start_pool: Any) -> None:
    supervisor = start_pool("--processes", "2", "--concurrency", "2")
    async with app:
        first = await eventually(lambda: _at_least(beats(app, supervisor), 2), timeout=20, what="2 up")
        victim = min(first.values())
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> set[int]:
            return set((await beats(app, supervisor)).values()) - set(first.values())

        (replacement,) = await eventually(replaced, timeout=20, what="a new child")
        assert supervisor.children() == set(first.values()) - {victim} | {replacement}
        await enqueue_by_spec(app, whoami, [((i, 0.05), {}) for i in range(20)])
        await eventually(lambda: completed(app, 20), timeout=20, what="20 jobs done")
        assert replacement in set((await pids_that_ran(app)).values())
    lines = [line for line in supervisor.output().splitlines() if "exited unexpectedly" in line]
    assert len(lines) == 1, supervisor.output()
    line = msgspec.json.decode(lines[0])
    assert line["pid"] == victim and line["signal"] == "SIGKILL" and line["restart_in_s"] > 0
    assert line["level"] == "warning" and supervisor.proc.poll() is None


async def test_sigterm_stops_every_child_and_exits_0(app: Engine, start_pool: Any) -> None:
    supervisor = start_pool("--processes", "2", "--concurrency", "5", "--grace-period", "5")
    async with app:
        await eventually(lambda: _at_least(beats(app, supervisor), 2), timeout=20, what="2 up")
        children = supervisor.children()
        assert len(children) == 2
        jobs = await enqueue_by_spec(app, whoami, [((i, 1.0), {}) for i in range(6)])
        await eventually(lambda: _active(app, 6), timeout=10, what="jobs running")
        began = time.monotonic()
        supervisor.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(supervisor.proc, 15) == 0
        assert time.monotonic() - began < 5  # within the grace period: the jobs finished
        assert not any(alive(pid) for pid in children)
        assert set(await runs(app)) == {job.id for job in jobs}  # finished, not abandoned
        assert await beats(app, supervisor) == {}  # each child said goodbye


async def test_children_stop_when_the_supervisor_is_sigkilled(app: Engine, start_pool: Any) -> None:
    supervisor = start_pool("--processes", "2", "--grace-period", "5")
    async with app:
        await eventually(lambda: _at_least(beats(app, supervisor), 2), timeout=20, what="2 up")
        children = supervisor.children()
        supervisor.proc.kill()
        await wait_exit(supervisor.proc, 5)
        await eventually(
            lambda: _true(not any(alive(pid) for pid in children)), timeout=10, what="orphans gone"
        )
    assert "pool supervisor gone; shutting down" in supervisor.output()


async def test_max_jobs_per_process_recycles_children(app: Engine, start_pool: Any) -> None:
    # A stop() that lands while a fetch is in flight may leave that entry pending until it
    # is reclaimed: a short visibility timeout brings it back within the test.
    flags = ["--processes", "2", "--concurrency", "1", "--max-jobs-per-process", "5"]
    supervisor = start_pool(*flags, env={"TEST_VISIBILITY_TIMEOUT": "2"})
    async with app:
        first = await eventually(lambda: _at_least(beats(app, supervisor), 2), timeout=20, what="2 up")
        jobs = await enqueue_by_spec(app, whoami, [((i,), {}) for i in range(20)])
        await eventually(lambda: completed(app, 20), timeout=30, what="20 jobs done")
        ran, counted = await pids_that_ran(app), await runs(app)
    assert set(ran) == set(counted) == {job.id for job in jobs}  # none lost
    assert all(count >= 1 for count in counted.values())
    assert len(set(ran.values()) - set(first.values())) >= 1  # fresh children took over
    output = supervisor.output()
    assert "recycled after its max jobs" in output and "exited unexpectedly" not in output


async def _at_least(found: Any, n: int) -> Any:
    result = await found
    return result if len(result) >= n else None


async def _active(app: Engine, n: int) -> bool:
    return (await app.stats())["default"]["active"] >= n
