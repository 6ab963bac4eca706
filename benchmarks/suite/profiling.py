"""A pyinstrument profile of the engine worker's hot path during a drain.

The worker process runs under this module (``python -m benchmarks.suite.profiling OUT_PREFIX
-- engine.worker ARGS...``): the profiler starts when the probe's start gate opens (so
start-up and imports are left out) and stops when the worker exits after SIGTERM; it writes
``OUT_PREFIX.html`` (pyinstrument's interactive view), ``OUT_PREFIX.txt`` (the call tree)
and ``OUT_PREFIX.json`` (the functions with the most *own* time, for the report).
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

from benchmarks.suite import probe

_profiler: Any = None


def _start() -> None:
    global _profiler
    if _profiler is not None:
        return
    from pyinstrument import Profiler

    _profiler = Profiler(interval=0.0005, async_mode="disabled")
    _profiler.start()


def _real_children(frame: Any) -> list[Any]:
    return [c for c in frame.children if not c.is_synthetic]


def _own_times(frame: Any, out: dict[str, float]) -> None:
    key = f"{frame.function} ({_area(frame.file_path)}:{frame.line_no})"
    out[key] = out.get(key, 0.0) + max(frame.total_self_time, 0.0)
    for child in _real_children(frame):
        _own_times(child, out)


def _area(file_path: str | None) -> str:
    path = file_path or "?"
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if "/engine/" in path:
        return "engine/" + path.split("/engine/", 1)[1]
    if "/benchmarks/" in path:
        return "benchmarks/" + path.split("/benchmarks/", 1)[1]
    if path.startswith("<") or path == "?":
        return path
    return "stdlib/" + Path(path).name


def _package(file_path: str | None) -> str:
    area = _area(file_path)
    if area.startswith(("engine/", "benchmarks/", "stdlib/", "<", "?")):
        return area
    return area.split("/", 1)[0]


def _by_module(frame: Any, out: dict[str, float]) -> None:
    area = _package(frame.file_path)
    out[area] = out.get(area, 0.0) + max(frame.total_self_time, 0.0)
    for child in _real_children(frame):
        _by_module(child, out)


def write(prefix: Path) -> None:
    if _profiler is None:
        return
    session = _profiler.stop()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.html").write_text(_profiler.output_html())
    Path(f"{prefix}.txt").write_text(_profiler.output_text(unicode=False, color=False, show_all=False))
    root = session.root_frame()
    own: dict[str, float] = {}
    areas: dict[str, float] = {}
    if root is not None:
        _own_times(root, own)
        _by_module(root, areas)
    total = session.duration or 1.0
    top = sorted(own.items(), key=lambda kv: kv[1], reverse=True)[:25]
    Path(f"{prefix}.json").write_text(
        json.dumps(
            {
                "duration_s": session.duration,
                "cpu_time_s": session.cpu_time,
                "top_own_time": [{"function": k, "s": v, "share": v / total} for k, v in top],
                "by_area": [
                    {"area": k, "s": v, "share": v / total}
                    for k, v in sorted(areas.items(), key=lambda kv: kv[1], reverse=True)[:25]
                ],
            },
            indent=2,
        )
    )


def main() -> None:
    prefix = Path(sys.argv[1])
    if sys.argv[2] != "--":
        raise SystemExit("usage: python -m benchmarks.suite.profiling OUT_PREFIX -- MODULE ARGS...")
    module, args = sys.argv[3], sys.argv[4:]
    probe.on_gate_open(_start)
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        write(prefix)


if __name__ == "__main__":
    main()
