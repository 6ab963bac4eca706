"""The engine logs through stdlib logging: its records belong to the loggers ``engine.*``,
carry the job's id, task, queue and attempt as attributes and a failed attempt's exception as
``exc_info``, and obey the host's levels; in library mode it adds no handler anywhere; the
command line renders them as console or JSON lines, as before."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engine.log  # noqa: F401  (what `import engine` is meant to do; checked apart, below)
from engine import Backoff, Engine, JobContext, JobFailed
from engine.testing import worker_running
from tests.helpers import ROOT, eventually, stop_process

FAST_RETRY = Backoff(initial=0.01, factor=1.0, max=0.01, jitter=0.0)


def _engine_records(caplog: pytest.LogCaptureFixture, job_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("engine") and getattr(r, "job_id", None) == job_id]


async def test_a_failed_attempt_is_a_record_with_the_jobs_fields_and_its_exception(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    app = Engine(redis_url, namespace=namespace)

    @app.task(queue="logs", timeout=5, max_attempts=2, backoff=FAST_RETRY)
    async def doomed(ctx: JobContext) -> None:
        await ctx.log(f"attempt {ctx.attempt} starting")
        raise ValueError(f"boom {ctx.attempt}")

    async with app, worker_running(app, queues=["logs"]):
        job = await doomed.enqueue()
        with pytest.raises(JobFailed):
            await job.result(timeout=15)

    records = _engine_records(caplog, job.id)
    by_message = {(r.getMessage(), getattr(r, "attempt", None)): r for r in records}
    retried = by_message[("job attempt failed; retrying", 1)]
    failed = by_message[("job failed", 2)]
    for record, attempt, level in ((retried, 1, logging.WARNING), (failed, 2, logging.ERROR)):
        assert record.name == "engine.worker" and record.levelno == level
        fields = record.__dict__
        assert (fields["task"], fields["queue"], fields["attempt"]) == (doomed.name, "logs", attempt)
        assert fields["error"] == f"ValueError: boom {attempt}"
        assert record.exc_info is not None
        kind, exc, tb = record.exc_info
        assert kind is ValueError and str(exc) == f"boom {attempt}" and tb is not None
        # The record names the engine's code that logged it, not structlog's.
        assert record.pathname.endswith(os.path.join("engine", "worker", "executor.py")), record.pathname
        assert record.funcName == "_failure"
    assert "retry_in_s" in retried.__dict__ and failed.__dict__["max_attempts"] == 2
    # ctx.log lines are records of engine.task, with the same fields.
    lines = [r for r in records if r.name == "engine.task"]
    assert [(r.getMessage(), r.levelno, r.__dict__["attempt"]) for r in lines] == [
        ("attempt 1 starting", logging.INFO, 1),
        ("attempt 2 starting", logging.INFO, 2),
    ]
    assert all(r.__dict__["task"] == doomed.name and r.__dict__["queue"] == "logs" for r in lines)


async def test_the_engine_loggers_obey_the_host_levels(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    logging.getLogger("engine").setLevel(logging.WARNING)  # caplog restores it afterwards
    app = Engine(redis_url, namespace=namespace)

    @app.task(queue="levels", timeout=5, max_attempts=2, backoff=FAST_RETRY)
    async def flaky(ctx: JobContext) -> str:
        await ctx.log("an info line")
        await ctx.log("a warning line", level="warning")
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    async with app, worker_running(app, queues=["levels"]):
        job = await flaky.enqueue()
        assert await job.result(timeout=15) == "ok"

    engine_records = [r for r in caplog.records if r.name.startswith("engine")]
    assert engine_records and all(r.levelno >= logging.WARNING for r in engine_records), [
        (r.name, r.getMessage()) for r in engine_records
    ]
    messages = [r.getMessage() for r in _engine_records(caplog, job.id)]
    assert messages.count("a warning line") == 2 and "job attempt failed; retrying" in messages
    assert "an info line" not in messages
    assert not [r for r in caplog.records if r.getMessage() in ("worker started", "worker stopped")]


LIBRARY_MODE = textwrap.dedent(
    """
    import logging, os, sys
    import anyio, structlog

    root, engine_logger = logging.getLogger(), logging.getLogger("engine")
    before = (list(root.handlers), root.level, list(engine_logger.handlers), engine_logger.level)

    import engine
    from engine import Backoff, Engine, JobFailed

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records = []

        def emit(self, record):
            self.records.append(record)

    async def main():
        app = Engine(os.environ["ENGINE_REDIS_URL"], namespace=os.environ["ENGINE_NAMESPACE"])

        @app.task(queue="library", timeout=5, max_attempts=1)
        async def doomed(ctx):
            raise KeyError("missing")

        async with app:
            worker = app.worker(queues=["library"], handle_signals=False, cron=False)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await worker.started.wait()
                job = await doomed.enqueue()
                try:
                    await job.result(timeout=15)
                except JobFailed:
                    pass
                worker.stop()
        app.dashboard(auth=lambda request: True)  # adds no handler either
        return job.id

    after_import = (list(root.handlers), root.level, list(engine_logger.handlers), engine_logger.level)
    host = Collect()
    root.addHandler(host)  # the host's handler, and its level
    root.setLevel(logging.INFO)
    job_id = anyio.run(main)
    root.removeHandler(host)
    assert before == after_import, (before, after_import)
    assert root.handlers == [] and engine_logger.handlers == [], (root.handlers, engine_logger.handlers)
    assert engine_logger.level == logging.NOTSET and not structlog.is_configured()
    names = {r.name for r in host.records}
    failed = [r for r in host.records if r.getMessage() == "job failed"]
    assert len(failed) == 1, [(r.name, r.getMessage()) for r in host.records]
    record = failed[0]
    assert (record.job_id, record.queue, record.attempt) == (job_id, "library", 1), record.__dict__
    assert record.exc_info and record.exc_info[0] is KeyError
    assert {"engine.worker"} <= names and all(n.startswith("engine") for n in names), names
    structlog.get_logger("someone.else").info("left to structlog's defaults")
    print("library mode ok")
    """
)


def test_library_mode_adds_no_handler_and_the_hosts_handler_gets_the_records(
    redis_url: str, namespace: str
) -> None:
    # A fresh interpreter: `import engine` (and nothing that imports engine.log on its own).
    env = {
        **os.environ,
        "ENGINE_REDIS_URL": redis_url,
        "ENGINE_NAMESPACE": namespace,
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", LIBRARY_MODE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Other structlog loggers keep structlog's defaults (printed to stdout); nothing else went
    # out on its own: no handler of the engine's, and the last-resort one saw nothing (the host
    # handler was there).
    assert result.stdout.splitlines()[-2:][0].endswith("left to structlog's defaults"), result.stdout
    assert result.stdout.splitlines()[-1] == "library mode ok"
    assert "job failed" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_importing_the_engine_routes_its_loggers_to_stdlib() -> None:
    script = (
        "import logging, structlog, engine\n"
        "seen = []\n"
        "class H(logging.Handler):\n"
        "    def emit(self, record): seen.append(record)\n"
        "logging.getLogger('engine').addHandler(H())\n"
        "structlog.get_logger('engine.worker').warning('routed', job_id='j1')\n"
        "got = [(r.name, r.getMessage(), r.job_id) for r in seen]\n"
        "assert got == [('engine.worker', 'routed', 'j1')], got\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (
        "`import engine` must route the engine's structlog loggers to stdlib logging "
        "(engine/__init__.py imports engine.log):\n" + result.stdout + result.stderr
    )


# --- the command line ------------------------------------------------------------------------

CLI_APP = textwrap.dedent(
    """
    from engine import Backoff, Engine, JobContext

    app = Engine()

    fast = Backoff(initial=0.01, factor=1, max=0.01, jitter=0)

    @app.task(queue="cli", timeout=5, max_attempts=2, backoff=fast)
    async def doomed(ctx: JobContext) -> None:
        await ctx.log("about to fail")
        raise ValueError("boom")
    """
)


@pytest.fixture
def cli_worker(
    redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    (tmp_path / "cli_log_app.py").write_text(CLI_APP)
    output = tmp_path / "worker.log"
    env = {
        **os.environ,
        "ENGINE_REDIS_URL": redis_url,
        "ENGINE_NAMESPACE": namespace,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.worker", "cli_log_app:app", "--log-json", "--no-cron"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        yield proc, output
    finally:
        stop_process(proc)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


async def test_the_cli_json_lines_are_unchanged_and_carry_the_traceback(
    redis_url: str, namespace: str, cli_worker: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, output = cli_worker

    async def started() -> bool:
        assert proc.poll() is None, output.read_text()
        return any(line.get("event") == "worker started" for line in _json_lines(output))

    await eventually(started, timeout=30, what="the worker started")
    app = Engine(redis_url, namespace=namespace)
    async with app:
        job = await app.enqueue("doomed")
        with pytest.raises(JobFailed):
            await app.job(job.id).result(timeout=15)
    proc.send_signal(signal.SIGTERM)

    async def stopped() -> bool:
        return proc.poll() is not None

    await eventually(stopped, timeout=15, what="the worker exited after SIGTERM")
    assert proc.returncode == 0, output.read_text()
    lines = _json_lines(output)
    assert len(lines) == len([x for x in output.read_text().splitlines() if x.strip()]), output.read_text()
    first = next(line for line in lines if line["event"] == "worker started")
    # The key order of the JSON lines before logging went through stdlib: fields, event, level,
    # timestamp (then exception).
    assert list(first) == ["worker", "queues", "concurrency", "event", "level", "timestamp"]
    assert first["level"] == "info" and first["queues"] == ["cli"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", first["timestamp"])
    mine = [line for line in lines if line.get("job_id") == job.id]
    retried = next(line for line in mine if line["event"] == "job attempt failed; retrying")
    failed = next(line for line in mine if line["event"] == "job failed")
    assert list(retried)[:4] == ["job_id", "task", "queue", "attempt"]
    assert list(retried)[-4:] == ["event", "level", "timestamp", "exception"]
    assert (retried["level"], retried["attempt"], failed["level"], failed["attempt"]) == (
        "warning",
        1,
        "error",
        2,
    )
    for line in (retried, failed):
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert line["exception"].endswith("ValueError: boom"), line["exception"]
    assert [line["level"] for line in mine if line["event"] == "about to fail"] == ["info", "info"]
    assert lines[-1]["event"] == "worker stopped"


def test_the_cli_console_lines_are_unchanged() -> None:
    script = textwrap.dedent(
        """
        import structlog
        from engine import log
        log.configure("info", json=False)
        worker = structlog.get_logger("engine.worker").bind(worker="w-1")
        worker.info("worker started", queues=["a"], concurrency=5)
        worker.debug("not shown")
        try:
            raise ValueError("boom")
        except ValueError as exc:
            worker.warning("job attempt failed; retrying", job_id="j", attempt=1, exc_info=exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
    lines = result.stderr.splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z"
    assert re.fullmatch(
        stamp + r" \[info     \] worker started {17}concurrency=5 queues=\['a'\] worker=w-1", lines[0]
    )
    assert re.fullmatch(
        stamp + r" \[warning  \] job attempt failed; retrying   attempt=1 job_id=j worker=w-1", lines[1]
    )
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "ValueError: boom"
    assert "not shown" not in result.stderr
