"""Compare the engine with its Python peers on this machine.

    python -m benchmarks [--quick | --full] [--only engine,arq,...] [--out benchmarks/results]
                         [--scale 0.1] [--no-profile]

Starts its own throwaway Valkey (engine.embedded.EmbeddedRedis) and, for the job-log
scenario, PostgreSQL (EmbeddedPostgres(fast=True)); runs every scenario for the engine and
each installed peer (arq, saq, taskiq, streaq, dramatiq, rq, celery) on a flushed database;
writes results.md, results.json, results.png, the engine's drain profile and the worker logs
to --out, and, for a complete quick run, benchmarks/RESULTS.md. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from benchmarks import peers as peer_registry
from benchmarks.suite import report
from benchmarks.suite.driver import ROOT, Driver, python
from benchmarks.suite.machine import describe
from benchmarks.suite.model import Run
from benchmarks.suite.runner import FULL, QUICK, Observer, Plan, Runner, scenarios, start_workers

SYSTEMS = ("engine", *peer_registry.PEERS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="20,000-job drains, 3 repetitions (default)")
    mode.add_argument("--full", action="store_true", help="200,000-job drains, 5 repetitions, scale scenario")
    parser.add_argument("--only", default="", help=f"comma-separated systems, from: {', '.join(SYSTEMS)}")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output directory")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every job count (e.g. 0.1 to try)")
    parser.add_argument("--reps", type=int, default=0, help="override the repetitions")
    parser.add_argument("--no-profile", action="store_true", help="skip the engine's pyinstrument profile")
    parser.add_argument(
        "--render",
        metavar="RESULTS_JSON",
        default="",
        help="measure nothing: rewrite results.md/.png (beside the JSON) from a results.json",
    )
    parser.add_argument(
        "--scenarios",
        default="",
        help="comma-separated subset: enqueue,drain,latency,io,failure,joblog,memory,scale",
    )
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(Path(args.render))
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SYSTEMS)
    unknown = sorted(set(chosen) - set(SYSTEMS))
    if unknown:
        print(f"unknown system(s): {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}", file=sys.stderr)
        return 2
    plan = FULL if args.full else QUICK
    plan = plan.scaled(args.scale)
    if args.reps:
        from dataclasses import replace

        plan = replace(plan, reps=args.reps)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    return anyio.run(_main, args, plan, chosen, out, command.strip())


async def _main(args: argparse.Namespace, plan: Plan, chosen: list[str], out: Path, command: str) -> int:
    from engine.embedded import EmbeddedPostgres, EmbeddedRedis

    only = {s.strip() for s in args.scenarios.split(",") if s.strip()}

    def want(name: str) -> bool:
        return not only or name in only

    started = time.monotonic()
    server = EmbeddedRedis()
    server.start()
    pg: EmbeddedPostgres | None = None
    pg_error: str | None = None

    def database_url() -> str | None:
        nonlocal pg, pg_error
        if pg is None and pg_error is None:
            try:
                pg = EmbeddedPostgres(fast=True)
                pg.start()
            except Exception as exc:
                pg_error = str(exc)
                return None
        return pg.url if pg is not None else None

    os.environ["BENCH_REDIS_URL"] = server.url  # the worker apps read it at import
    observer = Observer(server.url)
    run = Run(
        command=command,
        mode=plan.mode,
        scale=args.scale,
        machine=describe(),
        systems={},
        scenarios=scenarios(plan),
        started_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    run.extra["reps"] = plan.reps
    run.extra["plan"] = {k: v for k, v in plan.__dict__.items()}
    try:
        run.machine["server"] = await observer.server_version()
        print(f"server {run.machine['server']} at {server.url}; {plan.mode} mode; output {out}")
        runner = Runner(run, plan, observer, out, database_url=database_url)
        for name in chosen:
            driver = _driver(name, server.url, run)
            if driver is None:
                continue
            print(f"== {name} {driver.version}")
            try:
                await driver.open()
                await _run_system(runner, driver, want, args, out, run)
            finally:
                try:
                    await driver.close()
                except Exception as exc:
                    print(f"   (closing {name}: {exc})")
            _write(run, out, started, partial=True)
    finally:
        await observer.close()
        server.stop()
        if pg is not None:
            pg.stop()
    _write(run, out, started, partial=False)
    if plan.mode == "quick" and args.scale == 1 and not args.only and not only:
        _snapshot(run, out)
        print(f"wrote {ROOT / 'benchmarks' / 'RESULTS.md'} and RESULTS.png")
    print(report.markdown_table(run))
    print(f"results: {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'}")
    return 0


def render(path: Path) -> int:
    """Rewrite the markdown and the chart of an earlier run (and RESULTS.md if it was the
    complete quick run that wrote it)."""
    run = Run.from_json(json.loads(path.read_text()))
    (path.parent / "results.md").write_text(report.markdown(run))
    error = report.write_png(run, path.parent / "results.png")
    if error:
        print(f"no chart: {error}")
    if run.command.strip() == "python -m benchmarks --quick" and run.scale == 1:
        _snapshot(run, path.parent)
    print(report.markdown_table(run))
    return 0


def _snapshot(run: Run, out: Path) -> None:
    """The committed copy of a complete quick run: RESULTS.md and its chart, RESULTS.png."""
    title = "Benchmark results (latest quick run)"
    (ROOT / "benchmarks" / "RESULTS.md").write_text(report.markdown(run, title=title))
    chart = out / "results.png"
    if chart.exists():
        shutil.copyfile(chart, ROOT / "benchmarks" / "RESULTS.png")


def _driver(name: str, url: str, run: Run) -> Driver | None:
    if name == "engine":
        from benchmarks.suite.engine_driver import EngineDriver

        driver: Driver = EngineDriver(url)
    else:
        loaded = peer_registry.load(name)
        if isinstance(loaded, str):
            print(f"== {name}: skipped: {loaded}")
            run.systems[name] = {"skipped": loaded}
            return None
        driver = loaded(url)
    run.systems[name] = {"version": driver.version, "settings": dict(driver.settings)}
    return driver


async def _run_system(
    runner: Runner, driver: Driver, want: Any, args: argparse.Namespace, out: Path, run: Run
) -> None:
    engine = driver.name == "engine"
    if want("enqueue"):
        await runner.enqueue_scenarios(driver)
    if want("drain"):
        await runner.drain_scenarios(driver)
        if engine and not args.no_profile:
            run.extra["profile"] = await _profile(runner, driver, out)
    if want("latency"):
        await runner.latency_scenario(driver)
    if want("io"):
        await runner.io_scenario(driver)
    if want("failure"):
        await runner.failure_scenario(driver)
    if engine and want("joblog"):
        await runner.joblog_scenario(driver)
    if want("memory"):
        if engine:
            await runner.engine_memory(driver)
        else:
            await runner.memory_scenario(driver)
    if want("scale") and runner.plan.scale:
        await runner.scale_scenario(driver)


async def _profile(runner: Runner, driver: Driver, out: Path) -> dict[str, Any]:
    """One more engine drain (not counted) with the worker under pyinstrument."""
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        return {"error": "pyinstrument not installed"}
    prefix = out / "profile-engine-drain"
    base = driver.worker("noop", runner.plan.concurrency)
    module_args = base.argv[base.argv.index("-m") + 1 :]
    argv = [python(), "-m", "benchmarks.suite.profiling", str(prefix), "--", *module_args]
    cmd = type(base)(argv, base.env)
    print("    profiling the engine's drain (pyinstrument)")
    jobs = runner.plan.drain
    await runner._fresh(driver)
    await driver.fill("noop", list(range(jobs)))
    async with start_workers([cmd], runner._env(gate=True), runner.logs, "engine-profile") as workers:
        deadline = time.monotonic() + 60
        while await runner.obs.ready() < 1:
            if time.monotonic() > deadline or not workers.alive():
                return {"error": "the profiled worker did not start"}
            await anyio.sleep(0.01)
        t0 = time.time()
        await runner.obs.open_gate()
        await runner._wait_done(jobs, max(runner.plan.cap_s, 120), workers)
        rate = jobs / max(await runner.obs.last_done_at() - t0, 1e-6)
    summary = _read_profile(prefix)
    summary["rate_under_profiler"] = rate
    return summary


def _read_profile(prefix: Path) -> dict[str, Any]:
    summary_path = Path(f"{prefix}.json")
    if not summary_path.exists():
        return {"error": "the profiler wrote nothing"}
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    for ext in ("html", "txt"):
        path = Path(f"{prefix}.{ext}")
        summary[ext] = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return summary


def _write(run: Run, out: Path, started: float, *, partial: bool) -> None:
    run.duration_s = time.monotonic() - started
    report.write_json(run, out / "results.json")
    (out / "results.md").write_text(report.markdown(run))
    if not partial:
        error = report.write_png(run, out / "results.png")
        if error:
            print(f"no chart: {error}")


if __name__ == "__main__":
    raise SystemExit(main())
