"""Instructions Valkey executes per job for each step of its life: the steps of
``benchmarks.cost`` (enqueue, start, finish, each alone, and the bare XREADGROUP + XACK +
XDEL floor) with valkey-server run under callgrind, counting instructions instead of CPU time.

    python -m benchmarks.instructions [--jobs 5000] [--dump DIR]

A count of the engine's steps is the same from one run to the next (to a few parts in
ten thousand), where CPU time on a shared 2-core machine moves by a tenth or more: so a
change of a few per cent in what a script costs shows here when no /proc figure could tell
it from the noise. It counts Valkey's own instructions (the Lua interpreter, the commands,
the replies), not the kernel's work on its sockets, nor cache misses: a proxy for CPU time,
to compare two versions of the scripts, not a time. The bare floor's count is less steady
(29,000 to 42,000 here): its XDEL walks its entry's stream node, and how many entries share
a node depends on how their ids were spaced in time as they were written. Compare runs
made with the same options. Needs ``valgrind`` (Debian's package); Valkey runs about 50
times slower under it, hence fewer jobs than ``benchmarks.cost``. ``--dump DIR`` writes
callgrind's profile of each step there (``callgrind_annotate --inclusive=yes
DIR/<step>.callgrind``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from benchmarks.cost import steps
from engine.embedded.redis import find_redis_server
from engine.embedded.server import free_port

_COUNTER = re.compile(r"^\s*Th \d+\s+([\d,]+)", re.MULTILINE)


def instructions(pid: int) -> float:
    """Instructions the callgrind-run process ``pid`` has executed since it started."""
    command = ["callgrind_control", "-e", "Ir", str(pid)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    counts = _COUNTER.findall(out.stdout)
    if not counts:
        raise RuntimeError(f"callgrind_control gave no count for pid {pid}: {out.stdout.strip()!r}")
    return float(sum(int(c.replace(",", "")) for c in counts))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--dump", type=Path, help="write callgrind's profile of each step to this directory")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("benchmarks.instructions needs valgrind: apt-get install valgrind")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="engine-instructions-"))
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/callgrind.out"]
    valkey = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    server = subprocess.Popen(
        # hz 1: the server's timer (which runs by the wall clock, slowed 50-fold here) would
        # add its own work to the counts at the default 10.
        [*valgrind, *valkey, "--save", "", "--appendonly", "no", "--hz", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def meter(pid: int) -> float:
        count = instructions(pid)
        if args.dump is not None:  # each call ends a step (or starts one): a dump per step
            subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, check=True)
        return count

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit("valkey-server under valgrind did not start")
                time.sleep(0.2)
        results = anyio.run(steps, f"redis://127.0.0.1:{port}", args.jobs, meter, 1.0)
    finally:
        server.terminate()
        server.wait()
    print(f"{args.jobs:,} no-op jobs: instructions Valkey executes per job")
    for name, value in results.items():
        print(f"  {name:40s} {value:>10,.0f}")
    if args.dump is not None:
        _keep_dumps(workdir, args.dump)
    shutil.rmtree(workdir, ignore_errors=True)


def _keep_dumps(workdir: Path, target: Path) -> None:
    """callgrind.out.N, one per meter call: N = 2, 4, 6, 8 end enqueue, start, finish and the
    floor (the odd ones hold what came between two steps). A dump is written when the server
    next runs, so its edges are those of the commands around it, not exact: the counts
    printed are."""
    target.mkdir(parents=True, exist_ok=True)
    names = {2: "enqueue", 4: "start", 6: "finish", 8: "floor"}
    for n, name in names.items():
        dump = workdir / f"callgrind.out.{n}"
        if dump.exists():
            shutil.copy(dump, target / f"{name}.callgrind")
    print(f"profiles: {target}/{{{','.join(names.values())}}}.callgrind")


if __name__ == "__main__":
    main()
