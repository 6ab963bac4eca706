"""The worker pool: a supervisor keeping N ``python -m engine.worker`` processes running."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import Process

from engine.core.backoff import Backoff
from engine.core.errors import ConfigurationError

__all__ = ["LIFELINE_ENV", "NAME_ENV", "Pool", "cpu_count", "is_child", "watch_supervisor"]

log = structlog.get_logger("engine.worker")

# Set by the supervisor for each child: the worker's name, and the read end of a pipe whose
# write end only the supervisor holds (its EOF tells a child the supervisor is gone).
NAME_ENV = "ENGINE_WORKER_NAME"
LIFELINE_ENV = "ENGINE_POOL_LIFELINE"

# Past the grace period a child still records the last outcomes and closes its connections.
SHUTDOWN_MARGIN_S = 5.0
# A child that lived this long was healthy: its slot's restart delay starts over.
STABLE_AFTER_S = 10.0
# A child that dies at once (bad deploy, Redis refusing it) is retried ever more slowly,
# up to every 30 s: never a tight loop, and still back within 30 s of the cause going away.
RESTART_BACKOFF = Backoff(initial=0.1, factor=2.0, max=30.0, jitter=0.2)


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, which a container's cpuset
    narrows, where the OS has one; else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def is_child(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process was started by a :class:`Pool`."""
    return bool(environ.get(LIFELINE_ENV))


def watch_supervisor() -> None:
    """In a pool's child: SIGTERM itself (a graceful stop) once the supervisor is gone.

    A pipe rather than ``PR_SET_PDEATHSIG``: it also works where there is no prctl (macOS),
    needs no ``preexec_fn`` (unsafe with threads, and not offered by anyio), does not depend
    on which supervisor thread forked the child, and lets running jobs finish. A blocked
    read in a thread costs nothing until EOF, unlike polling ``os.getppid()``.
    """
    raw = os.environ.pop(LIFELINE_ENV, "")
    try:
        fd = int(raw)
        os.fstat(fd)
    except (ValueError, OSError):
        log.warning("not watching the pool supervisor: bad lifeline", value=raw)
        return
    os.set_inheritable(fd, False)  # the job's own subprocesses have no business with it

    def wait_for_eof() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 64):
                pass
        log.warning("pool supervisor gone; shutting down", pid=os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_for_eof, name="engine-pool-lifeline", daemon=True).start()


@dataclass(eq=False)
class _Slot:
    index: int
    generation: int = -1
    failures: int = 0  # quick deaths in a row, for the restart delay
    process: Process | None = None


class Pool:
    """Keeps ``processes`` children of ``command`` running until ``stop()``, SIGTERM or SIGINT.

    A child that dies is replaced, after a delay that grows while children keep dying
    young. With ``recycle=True`` a child exiting 0 finished its ``--max-jobs-per-process``
    and is replaced at once. Stopping sends SIGTERM to every child, waits for them up to
    ``grace_period`` plus a margin and SIGKILLs what is left; a second SIGINT kills at once.
    Create it inside the event loop that runs it.
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        grace_period: float = 30.0,
        recycle: bool = False,
        env: Mapping[str, str] | None = None,
        handle_signals: bool = True,
    ) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ConfigurationError(f"processes must be an integer >= 1, not {processes!r}")
        if not grace_period >= 0:
            raise ConfigurationError(f"grace_period must be a number of seconds >= 0, not {grace_period!r}")
        self.command = list(command)
        self.grace_period = float(grace_period)
        self.recycle = recycle
        self.env = dict(os.environ if env is None else env)
        self.handle_signals = handle_signals
        # Unique per incarnation, so a replacement never inherits a dead child's consumer
        # name or heartbeat; the dashboard reads slot and generation off it.
        self.prefix = f"{socket.gethostname()}-{os.getpid()}"
        self._slots = [_Slot(i) for i in range(processes)]
        self._stopping = anyio.Event()
        self._killing = False
        self._lifeline = -1
        self._log = log.bind(supervisor=os.getpid())

    @property
    def pids(self) -> list[int]:
        """The children running now."""
        return [process.pid for process in self._live()]

    def stop(self) -> None:
        """Stop every child gracefully (returns at once; ``run()`` returns once they exited)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for process in self._live():
            _signal(process, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL every child now: their running jobs are reclaimed by other workers."""
        self.stop()
        self._killing = True
        for process in self._live():
            _signal(process, signal.SIGKILL)

    async def run(self) -> int:
        """Supervise until stopped; returns the exit code (0)."""
        read_end, write_end = os.pipe()
        self._lifeline = read_end
        self._log.info("worker pool started", processes=len(self._slots), command=self.command)
        try:
            async with anyio.create_task_group() as group:
                if self.handle_signals and threading.current_thread() is threading.main_thread():
                    group.start_soon(self._watch_signals)
                group.start_soon(self._deadline)
                async with anyio.create_task_group() as slots:
                    for slot in self._slots:
                        slots.start_soon(self._keep, slot)
                group.cancel_scope.cancel()
        finally:
            # Reached with children alive only when the supervisor itself fails or is
            # cancelled: it must not leave them behind.
            with anyio.CancelScope(shield=True):
                await self._reap()
            os.close(write_end)
            os.close(read_end)
        self._log.info("worker pool stopped")
        return 0

    async def _keep(self, slot: _Slot) -> None:
        while not self._stopping.is_set():
            started_at = time.monotonic()
            try:
                process = await self._spawn(slot)
            except OSError as exc:
                delay = self._restart_delay(slot, 0.0)
                self._log.error(
                    "could not start a worker process; retrying",
                    slot=slot.index,
                    error=str(exc),
                    restart_in_s=round(delay, 2),
                )
                await self._pause(delay)
                continue
            if self._stopping.is_set():  # stop() came while it started: it missed this one
                _signal(process, signal.SIGKILL if self._killing else signal.SIGTERM)
            code = await process.wait()
            slot.process = None
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started_at
            if code == 0 and self.recycle:
                slot.failures = 0
                self._log.info("worker process recycled after its max jobs", pid=process.pid, slot=slot.index)
                continue
            delay = self._restart_delay(slot, lived)
            self._log.warning(
                "worker process exited unexpectedly; restarting",
                pid=process.pid,
                slot=slot.index,
                exit_code=code,
                signal=_signal_name(-code) if code < 0 else None,
                lived_s=round(lived, 1),
                restart_in_s=round(delay, 2),
            )
            await self._pause(delay)

    async def _spawn(self, slot: _Slot) -> Process:
        slot.generation += 1
        name = f"{self.prefix}-{slot.index}-{slot.generation}"
        env = {**self.env, NAME_ENV: name, LIFELINE_ENV: str(self._lifeline)}
        # A session of its own: a terminal's Ctrl-C reaches the supervisor alone, which
        # then stops each child once, instead of every child also taking it as its own.
        process = await anyio.open_process(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=None,
            stderr=None,
            env=env,
            start_new_session=True,
            pass_fds=(self._lifeline,),
        )
        slot.process = process
        self._log.info("worker process started", pid=process.pid, slot=slot.index, name=name)
        return process

    def _restart_delay(self, slot: _Slot, lived: float) -> float:
        if lived >= STABLE_AFTER_S:
            slot.failures = 0
        slot.failures += 1
        return RESTART_BACKOFF.delay(slot.failures)

    async def _pause(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._stopping.wait()

    async def _deadline(self) -> None:
        await self._stopping.wait()
        await anyio.sleep(self.grace_period + SHUTDOWN_MARGIN_S)
        if self._live():
            self._log.warning("grace period over; killing worker processes", pids=self.pids)
            self.kill()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not self._stopping.is_set():
                    self._log.info(
                        "signal received; stopping worker processes",
                        signal=signal.Signals(signum).name,
                        grace_period_s=self.grace_period,
                    )
                    self.stop()
                elif signum == signal.SIGINT and not self._killing:
                    self._log.warning("second interrupt: killing worker processes", pids=self.pids)
                    self.kill()

    async def _reap(self) -> None:
        live = self._live()
        if not live:
            return
        self._log.warning("supervisor failing; stopping its worker processes", pids=self.pids)
        self._stopping.set()
        for process in live:
            _signal(process, signal.SIGTERM)
        with anyio.move_on_after(self.grace_period + SHUTDOWN_MARGIN_S):
            for process in live:
                await process.wait()
        self.kill()
        for process in live:
            await process.wait()

    def _live(self) -> list[Process]:
        return [s.process for s in self._slots if s.process is not None and s.process.returncode is None]


def _signal(process: Process, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited and was reaped meanwhile
        process.send_signal(signum)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
