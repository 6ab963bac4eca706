"""Command lines: ``python -m engine.worker`` and ``python -m engine <command>``.

Errors a user can fix (bad MODULE:APP, bad URL, unreachable server, bad arguments) print
one line and exit 2 or 1, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio

from engine import log as logsetup
from engine.app import Engine
from engine.errors import EngineError


class UsageError(Exception):
    pass


def load_app(spec: str) -> Engine:
    """Import ``module.path:attribute`` and return the Engine it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:APP (for example myapp.jobs:app), got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError(
                f"cannot import module {module_name!r} (run from the directory that contains it, "
                "or set PYTHONPATH)"
            ) from None
        raise
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, Engine):
        obj = obj()
    if not isinstance(obj, Engine):
        raise UsageError(f"{spec!r} is a {type(obj).__name__}, not an engine.Engine")
    return obj


def _run(main: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    try:
        return int(anyio.run(main) or 0)
    except (UsageError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        return 130


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def worker_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.worker",
        description="Run a worker: fetch and execute jobs of an app's queues until SIGTERM/SIGINT.",
    )
    parser.add_argument("app", metavar="MODULE:APP", help="the Engine to run, e.g. myapp.jobs:app")
    parser.add_argument(
        "--queues",
        type=_split,
        default=None,
        help="comma-separated queues (default: every queue the app's tasks use)",
    )
    parser.add_argument("--concurrency", type=int, default=100, help="jobs run at once (default 100)")
    parser.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        help="seconds running jobs get to finish on shutdown (default 30)",
    )
    parser.add_argument("--no-cron", action="store_true", help="do not run the cron scheduler")
    parser.add_argument("--log-level", default=os.environ.get("ENGINE_LOG_LEVEL", "info"))
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    try:
        logsetup.configure(args.log_level, args.log_json)
        app = load_app(args.app)
    except (UsageError, EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        async with app:
            worker = app.worker(
                queues=args.queues, concurrency=args.concurrency, grace_period=args.grace_period
            )
            await worker.run()

    return _run(main)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Engine command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a self-contained demo on an embedded Valkey")
    demo.add_argument("--jobs", type=int, default=500, help="jobs to enqueue (default 500)")
    demo.add_argument("--data-dir", default=".engine-demo", help="where the embedded server keeps data")

    stats = sub.add_parser("stats", help="per-queue counts")
    stats.add_argument("--app", metavar="MODULE:APP", default=None)

    enqueue = sub.add_parser("enqueue", help="enqueue a job by task name")
    enqueue.add_argument("task")
    enqueue.add_argument("--args", default="[]", help="JSON list of positional arguments")
    enqueue.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    enqueue.add_argument(
        "--app",
        metavar="MODULE:APP",
        default=None,
        help="check arguments against this app's task (default: trust the worker's announcement)",
    )

    args = parser.parse_args(argv)
    if args.command == "demo":
        from engine.demo import run_demo

        if args.jobs < 1:
            parser.error("--jobs must be >= 1")
        return int(run_demo(args.jobs, args.data_dir))

    try:
        app = load_app(args.app) if getattr(args, "app", None) else Engine()
    except (UsageError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.command == "stats":

        async def show_stats() -> None:
            async with app:
                print(json.dumps(await app.stats(), indent=2))

        return _run(show_stats)

    try:
        call_args = json.loads(args.args)
        call_kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        print(f"error: --args/--kwargs must be JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        print("error: --args must be a JSON list and --kwargs a JSON object", file=sys.stderr)
        return 2

    async def do_enqueue() -> None:
        async with app:
            job = await app.enqueue(args.task, *call_args, **call_kwargs)
            print(job.id)

    try:
        return _run(do_enqueue)
    except TypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
