"""``python -m engine demo`` as a user runs it, in a subprocess: a signal (SIGTERM from
``timeout`` or ``kill``, SIGHUP from a closed terminal, SIGINT from Ctrl-C) stops every
process it started, whatever phase it is in; and it runs from a non-editable install,
outside the source tree, without ``examples`` on the path.

Which processes it started is read from /proc: the servers and the worker all run with their
cwd in the demo's data dir (and initdb and pg_ctl name it in their arguments), and while it
runs its descendants are recorded too; each is identified by pid and start time, so a
recycled pid cannot pass for a survivor.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

# Generous: a first start runs initdb, and the machine may be busy with other test runs.
START_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 90.0
# A server stopped with "-w" can still be a process for a moment after its pid file is gone.
GONE_TIMEOUT_S = 10.0


class Demo:
    """A running ``python -m engine demo``, its output collected as it comes."""

    def __init__(self, data_dir: Path, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None):
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "demo", "--data-dir", str(data_dir), *args],
            cwd=cwd,
            env={**base_env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._text = ""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            with self._changed:
                self._text += chunk.decode("utf-8", "replace")
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return self._text

    def wait_for(self, text: str, timeout: float = START_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while text not in self._text:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"the demo never printed {text!r}; output:\n{self._text}")
                self._changed.wait(min(left, 0.5))
            return self._text

    def finish(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: split after its closing one.
    return stat.rsplit(")", 1)[1].split()


def _alive(pid: int, started: str) -> bool:
    fields = _stat_fields(pid)
    # fields[0] is the state (field 3 of proc(5)), fields[19] the start time (field 22).
    return fields is not None and fields[19] == started and fields[0] not in ("Z", "X")


def _processes_of(base: Path) -> dict[int, str]:
    """Live processes working in ``base`` or naming it in their arguments: pid -> start time."""
    found: dict[int, str] = {}
    prefix = str(base)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            argv = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue  # gone, or a zombie (no cwd): either way not running
        if cwd == prefix or cwd.startswith(prefix + os.sep) or prefix in argv:
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X"):
                found[int(entry.name)] = fields[19]
    return found


def _descendants(root: int) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            starts[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = starts[pid]
        todo.extend(children.get(pid, []))
    return found


def _survivors(base: Path, recorded: dict[int, str]) -> dict[int, str]:
    """What is still running of ``recorded`` or in ``base``, once given a moment to exit."""
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while True:
        left = {pid: s for pid, s in recorded.items() if _alive(pid, s)}
        left.update(_processes_of(base))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _describe(pids: dict[int, str]) -> list[str]:
    out = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            argv = "(gone)"
        out.append(f"{pid}: {argv}")
    return out


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    base = tmp_path / "demo"
    yield base
    # Whatever a failing run left behind must not outlive the test (nor hold its ports).
    for pid in _processes_of(base):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _servers_up(demo: Demo) -> dict[int, str]:
    """Wait for the demo's servers; returns what it runs (pid -> start time) at that point."""
    text = demo.wait_for("postgresql at ")
    running = _processes_of(demo.data_dir) | _descendants(demo.proc.pid)
    postmaster = int((demo.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    assert postmaster in running, (postmaster, _describe(running))
    if match := re.search(r"valkey at \S+ \(pid (\d+)\)", text):
        assert int(match[1]) in running
    return running


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_once_the_servers_are_up_stops_everything(data_dir: Path, signum: signal.Signals) -> None:
    demo = Demo(data_dir, "--jobs", "200", "--keep")
    try:
        running = _servers_up(demo)
        demo.proc.send_signal(signum)
        code = demo.finish()
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
    left = _survivors(data_dir, running)
    assert not left, (_describe(left), demo.output)
    # The demo had not finished (a worker had still to start): cut short, 128 + the signal.
    assert code == 128 + signum, demo.output
    assert f"{signum.name}: stopping everything" in demo.output
    assert "stopped everything the demo started." in demo.output


def test_sigterm_while_the_servers_start_stops_what_was_started(data_dir: Path) -> None:
    demo = Demo(data_dir, "--jobs", "20")
    try:
        demo.wait_for("starting an embedded Valkey and PostgreSQL")
        demo.proc.send_signal(signal.SIGTERM)
        code = demo.finish()
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
    left = _survivors(data_dir, {})
    assert not left, (_describe(left), demo.output)
    assert code == 128 + signal.SIGTERM, demo.output


def test_sighup_after_the_summary_with_keep_stops_everything_and_exits_0(data_dir: Path) -> None:
    demo = Demo(data_dir, "--jobs", "40", "--keep")
    try:
        demo.wait_for("the demo keeps running", timeout=START_TIMEOUT_S + 60)
        running = _processes_of(data_dir) | _descendants(demo.proc.pid)
        assert len(running) >= 3, _describe(running)  # valkey, the postmaster, the worker
        demo.proc.send_signal(signal.SIGHUP)
        code = demo.finish()
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
    left = _survivors(data_dir, running)
    assert not left, (_describe(left), demo.output)
    assert code == 0, demo.output  # the demo had finished: --keep is meant to end this way
    assert "summary:" in demo.output and "monthly report" in demo.output


def test_the_demo_on_a_cluster_runs_to_its_summary_and_stops_all_six_nodes(data_dir: Path) -> None:
    demo = Demo(data_dir, "--jobs", "60", "--cluster")
    try:
        text = demo.wait_for("enqueued 60 jobs", timeout=START_TIMEOUT_S + 60)
        assert re.search(r"a cluster of 6 nodes \(masters \[\d+, \d+, \d+\]\)", text), text
        running = _processes_of(data_dir) | _descendants(demo.proc.pid)
        valkeys = [pid for pid in running if b"valkey-server" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(valkeys) == 6, _describe(running)
        code = demo.finish()
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
    left = _survivors(data_dir, running)
    assert not left, (_describe(left), demo.output)
    assert code == 0, demo.output
    summary = demo.output.split("summary:", 1)[1]
    shipped = re.search(r"(\d+) finished jobs shipped", summary)  # the 60 and the cron's run
    assert shipped and int(shipped[1]) >= 60 and "monthly report" in summary, demo.output


def _install_like_a_wheel(tmp_path: Path) -> Path:
    """The package as a non-editable install holds it: pip builds a wheel of this tree (in an
    isolated build environment, with the setuptools pyproject.toml asks for, so the wheel
    holds exactly the package data it lists) and installs it without dependencies into a dir
    of its own."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(ROOT / "engine", src / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile"]
    built = subprocess.run(
        [*install, "--target", str(target), str(src)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    shutil.rmtree(src)  # nothing of the source tree may help
    return target


def test_the_demo_runs_from_a_non_editable_install(tmp_path: Path, data_dir: Path) -> None:
    target = _install_like_a_wheel(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target)}
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util, engine, engine.demo_app; "
            "print(engine.__file__); print(engine.demo_app.app.schedules['monthly_report_preview'].name); "
            "print(importlib.util.find_spec('examples')); print(engine.__version__)",
        ],
        cwd=elsewhere,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    engine_file, schedule, examples, version = probe.stdout.split("\n")[:4]
    assert Path(engine_file).is_relative_to(target), engine_file  # not the checkout's engine
    assert schedule == "monthly_report_preview"
    assert examples == "None"  # `examples` is not importable here: the demo cannot lean on it
    # The wheel's metadata came along: engine.__version__ is pyproject.toml's version.
    assert version == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    demo = Demo(data_dir, "--jobs", "40", cwd=elsewhere, env=env)
    try:
        code = demo.finish(timeout=START_TIMEOUT_S + 60)
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
    assert code == 0, demo.output
    assert "summary:" in demo.output and "monthly report" in demo.output, demo.output
    assert not _survivors(data_dir, {})
