"""Helpers the benchmark scripts share: waiting on a condition with a deadline, and the CPU
time a process has used so far (from ``/proc``, so it works for any process: a valkey-server,
a worker), for CPU per job as the difference of two readings over a drain."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


async def wait_until(check: Callable[[], Awaitable[object]], timeout: float, interval: float = 0.05) -> None:
    """Poll ``check`` until it returns something truthy; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await anyio.sleep(interval)
    raise TimeoutError("benchmark condition not met in time")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (``/proc/<pid>/stat`` utime and
    stime; Linux only, resolution one clock tick, 10 ms): compare two readings."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces: count from after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def cpu_readings(pids: dict[str, int]) -> dict[str, float]:
    """:func:`cpu_seconds` of several processes, by label."""
    return {label: cpu_seconds(pid) for label, pid in pids.items()}
