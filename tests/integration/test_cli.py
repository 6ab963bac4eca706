"""The command lines, run as a user would: real processes, real Redis, one-line errors."""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from engine import Engine, JobContext, UnrecoverableError
from engine.testing import worker_running
from tests.helpers import ROOT, eventually, free_port, start_worker_process, stop_process


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


# --- --version, help on every option, console scripts ------------------------------------


def test_version_is_the_installed_one() -> None:
    import engine

    try:
        expected = metadata.version("engine")
    except metadata.PackageNotFoundError:
        expected = "0+unknown"
    assert engine.__version__ == expected
    for module in ("engine", "engine.worker"):
        result = run("-m", module, "--version")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[:2] == ["engine", expected], result.stdout


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of every command line, subcommands included, walked from the roots (so
    an option or subcommand added later is walked too)."""
    from engine.cli import build_parser, worker_parser
    from engine.dashboard.__main__ import build_parser as dashboard_parser

    todo = [
        ("engine", build_parser()),
        ("engine.worker", worker_parser()),
        ("engine.dashboard", dashboard_parser()),
    ]
    while todo:
        name, parser = todo.pop()
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", subparser) for sub, subparser in action.choices.items()]


def test_every_option_and_subcommand_has_help() -> None:
    missing: list[str] = []
    seen = 0
    for name, parser in _parsers():
        for action in parser._actions:
            seen += 1
            what = f"{name} {'/'.join(action.option_strings) or action.metavar or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{what}: no help")
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions if choice.help}
                missing += [f"{name} {sub}: no help" for sub in action.choices if sub not in helped]
            # An option that takes a value says what it is when not given.
            takes_value = action.option_strings and action.nargs != 0 and not action.required
            if takes_value and action.help and "default" not in action.help:
                missing.append(f"{what}: help does not say its default")
    assert seen > 60
    assert not missing, missing


def test_console_scripts_are_installed() -> None:
    try:
        dist = metadata.distribution("engine")
    except metadata.PackageNotFoundError:
        pytest.skip("engine is not installed (run from a source tree)")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    if not scripts:
        pytest.skip("installed before pyproject.toml had [project.scripts]: pip install -e . again")
    assert scripts == {"engine": "engine.cli:main", "engine-worker": "engine.cli:worker_main"}
    bin_dir = Path(sysconfig.get_path("scripts"))
    for script, prog in (("engine", "engine"), ("engine-worker", "engine-worker")):
        path = bin_dir / script
        if not path.exists():
            pytest.skip(f"{script} is not in {bin_dir}: this environment's install predates it")
        version = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
        assert version.returncode == 0 and version.stdout.startswith("engine "), version.stderr
        usage = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30)
        assert usage.returncode == 0 and usage.stdout.startswith(f"usage: {prog} "), usage.stdout


# --- python -m engine health ---------------------------------------------------------------


def health(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    # No ENGINE_* from the outside: each test says what the probe checks.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "engine", "health", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_health(result: subprocess.CompletedProcess[str], healthy: bool, *words: str) -> str:
    assert "Traceback" not in result.stdout + result.stderr
    out, quiet = (result.stdout, result.stderr) if healthy else (result.stderr, result.stdout)
    assert result.returncode == (0 if healthy else 1), result.stdout + result.stderr
    lines = out.splitlines()
    assert len(lines) == 1 and not quiet, result.stdout + result.stderr
    assert lines[0].startswith("healthy: " if healthy else "unhealthy: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_health_of_redis_and_postgresql(redis_url: str, database_url: str, namespace: str) -> None:
    common = ["--redis-url", redis_url, "--namespace", namespace]
    line = assert_health(health(*common), True, "redis", "answered")
    assert "postgresql" not in line  # no database URL configured: not checked
    assert_health(health(*common, "--database-url", database_url), True, "redis", "postgresql")
    bad_db = f"postgresql://user:s3cret@127.0.0.1:{free_port()}/nope"
    line = assert_health(health(*common, "--database-url", bad_db), False, "FAILED postgresql")
    assert "s3cret" not in line and "redis" in line


def test_health_fails_within_the_timeout_on_a_closed_port() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert_health(health("--redis-url", url, "--timeout", "5"), False, "FAILED redis", url)


async def test_health_is_bounded_by_its_timeout_when_a_server_never_answers() -> None:
    from engine.cli.health import check

    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        app = Engine(url, database_url=f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/db")
        started = time.monotonic()
        try:
            result = await check(app, min_workers=1, timeout=1.0)
        finally:
            await app.close()
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, elapsed
        assert not result.healthy
        line = result.line()
        assert "FAILED redis" in line and "FAILED workers" in line, line
        assert_health(health("--redis-url", url, "--timeout", "1"), False, "FAILED redis", "within 1")


async def test_health_checks_workers(redis_url: str, namespace: str) -> None:
    from engine.inspector import workers

    common = ["--redis-url", redis_url, "--namespace", namespace]
    assert_health(health(*common, "--min-workers", "1"), False, "FAILED workers: 0 worker(s)", namespace)
    app = Engine(redis_url, namespace=namespace)

    @app.task(timeout=5)
    async def noop(ctx: JobContext) -> None:
        pass

    async with app, worker_running(app, name=f"probe-{namespace}"):
        await eventually(lambda: workers(app), what="the worker's first heartbeat")
        assert_health(
            health(*common, "--min-workers", "1", "--worker", f"probe-{namespace}"),
            True,
            "1 worker(s)",
            f"worker 'probe-{namespace}': seen",
        )
        line = assert_health(health(*common, "--min-workers", "2", "--worker", "nobody"), False)
        assert "FAILED workers: 1 worker(s)" in line and "FAILED worker 'nobody'" in line, line


async def test_worker_name_option_names_the_worker_and_a_pools_children(
    redis_url: str, namespace: str
) -> None:
    from engine.inspector import workers

    app = Engine(redis_url, namespace=namespace)
    common = ["--redis-url", redis_url, "--namespace", namespace]
    single = start_worker_process("tests.apps.counting:app", redis_url, namespace, "--name", "solo-1")
    pooled = start_worker_process(
        "tests.apps.counting:app", redis_url, namespace, "--name", "pod-a", "--processes", "1"
    )
    try:

        async def ids() -> set[str]:
            found = {beat.id for beat in await workers(app)}
            return (
                found if "solo-1" in found and any(re.fullmatch(r"pod-a-0-\d+", i) for i in found) else set()
            )

        assert len(await eventually(ids, timeout=60, what="both workers' heartbeats")) == 2
        assert_health(health(*common, "--worker", "solo-1", "--worker", "pod-a"), True, "'solo-1'", "'pod-a'")
    finally:
        for proc in (single, pooled):
            proc.terminate()
        for proc in (single, pooled):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(proc)
        await app.close()
    bad = run("-m", "engine.worker", "tests.apps.counting:app", "--name", "has space")
    assert bad.returncode == 2 and "--name" in bad.stderr and "Traceback" not in bad.stderr
