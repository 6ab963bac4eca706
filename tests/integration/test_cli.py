"""The command lines, run as a user would: real processes, real Redis, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine import Engine, JobContext, UnrecoverableError
from engine.testing import worker_running
from tests.helpers import ROOT, free_port


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("no_such_module:app", ["cannot import module 'no_such_module'"]),
        ("tests.apps.counting:missing", ["has no attribute 'missing'"]),
        ("tests.apps.counting", ["expected MODULE:APP"]),
        ("tests.apps.counting:runs_key", ["not an engine.Engine"]),
    ],
)
def test_worker_refuses_a_bad_app_spec(spec: str, words: list[str]) -> None:
    assert_one_line_error(run("-m", "engine.worker", spec), 2, *words)


def test_worker_with_unreachable_redis_prints_one_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run("-m", "engine.worker", "tests.apps.counting:app", env={"ENGINE_REDIS_URL": url}, timeout=15)
    assert_one_line_error(result, 1, "cannot reach Redis", url)


def test_bad_redis_url_is_a_clear_error() -> None:
    result = run("-m", "engine", "stats", "--redis-url", "http://nope")
    assert_one_line_error(result, 2, "invalid Redis URL")


def test_help_on_every_command() -> None:
    for args in (["engine.worker"], ["engine"], ["engine", "dlq"], ["engine", "enqueue"]):
        result = run("-m", *args, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout


async def test_enqueue_stats_and_dlq_commands(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)

    @app.task(timeout=5, max_attempts=1)
    async def charge(ctx: JobContext, amount: int) -> None:
        if amount <= 0:
            raise UnrecoverableError(f"bad amount {amount}")

    common = ["--redis-url", redis_url, "--namespace", namespace]
    async with app, worker_running(app):  # announces the task, so the CLI can enqueue by name
        result = run("-m", "engine", "enqueue", "charge", "--args", "[-5]", *common)
        assert result.returncode == 0, result.stderr
        job = app.job(result.stdout.strip())
        with pytest.raises(Exception, match="bad amount -5"):
            await job.result(timeout=10)
        bad = run("-m", "engine", "enqueue", "charge", "--args", "[1, 2]", *common)
        assert_one_line_error(bad, 2, "charge")
        bad_json = run("-m", "engine", "enqueue", "charge", "--args", "[oops", *common)
        assert_one_line_error(bad_json, 2, "JSON")
        for flags, words in (
            (["--timeout", "1e12"], "timeout must be"),
            (["--max-attempts", "1000000"], "max_attempts must be"),
            (["--delay", "1e12"], "delay must be"),
            (["--delay", "nan"], "delay must be"),
            (["--args", "[" * 200 + "]" * 200], "deeper than 64"),
        ):
            absurd = run("-m", "engine", "enqueue", "charge", "--args", "[1]", *flags, *common)
            assert_one_line_error(absurd, 2, words)
        delayed = run("-m", "engine", "enqueue", "charge", "--args", "[1]", "--delay", "3600", *common)
        assert delayed.returncode == 0 and (await app.stats())["default"]["delayed"] == 1
        unknown = run("-m", "engine", "enqueue", "nope", *common)
        assert_one_line_error(unknown, 1, "unknown task 'nope'")

        listed = run("-m", "engine", "dlq", "list", *common)
        assert listed.returncode == 0 and job.id in listed.stdout and "bad amount -5" in listed.stdout
        stats = run("-m", "engine", "stats", *common)
        assert '"dlq": 1' in stats.stdout

        refused = run("-m", "engine", "dlq", "replay", "--all", *common)
        assert_one_line_error(refused, 2, "--yes")
        replayed = run("-m", "engine", "dlq", "replay", "--all", "--yes", *common)
        assert replayed.returncode == 0 and "replayed 1 job" in replayed.stdout, replayed.stderr
        with pytest.raises(Exception, match="bad amount -5"):
            await job.result(timeout=10)
        purged = run("-m", "engine", "dlq", "purge", "--yes", *common)
        assert purged.returncode == 0 and "purged 1" in purged.stdout
        assert await app.dlq().count() == 0 and await job.info() is None
