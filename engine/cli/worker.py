"""``python -m engine.worker MODULE:APP``: one worker in this process, or a pool of them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from engine import log as logsetup
from engine.cli.common import UsageError, add_version, load_app, prog, run, split
from engine.client.app import Engine
from engine.core.errors import EngineError
from engine.worker import pool


def processes(value: str) -> int:
    if value == "auto":
        return pool.cpu_count()
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'auto', got {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or 'auto'), got {count}")
    return count


def child_argv(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The command line of a pool's child: the supervisor's own, less ``--processes``.
    Rebuilt from the parser, so an option added to it later reaches the children too."""
    argv = [args.app]
    for action in parser._actions:
        # Positionals, --processes, and what stores nothing (--help, --version) stay out.
        if not action.option_strings or action.dest == "processes" or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        flag = action.option_strings[-1]
        if action.nargs == 0:  # a flag, given or not
            if value:
                argv.append(flag)
        elif value is not None:
            argv += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    return argv


def worker_name(value: str) -> str:
    """argparse type: a worker id (a consumer name in Redis, a heartbeat on the dashboard)."""
    if not value or len(value) > 200 or not value.isprintable() or any(c.isspace() for c in value):
        raise argparse.ArgumentTypeError(
            f"expected 1 to 200 printable characters without spaces, got {value!r}"
        )
    return value


def worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("python -m engine.worker", "engine-worker"),
        description="Run a worker: fetch and execute jobs of an app's queues until SIGTERM/SIGINT "
        "(graceful: running jobs get the grace period; a second SIGINT stops at once).",
    )
    add_version(parser)
    parser.add_argument("app", metavar="MODULE:APP", help="the Engine to run, e.g. myapp.jobs:app")
    parser.add_argument(
        "--queues",
        type=split,
        default=None,
        metavar="Q1,Q2",
        help="comma-separated queues (default: every queue the app's tasks use)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=100, metavar="N", help="jobs run at once, >= 1 (default 100)"
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds running jobs get to finish on shutdown (default 30)",
    )
    parser.add_argument(
        "--name",
        type=worker_name,
        default=None,
        metavar="NAME",
        help="the worker's id: its consumer name and its heartbeat on the dashboard and for "
        "`python -m engine health --worker NAME`; unique among live workers, e.g. the pod name "
        "(default: <host>-<pid>-<random>; with --processes, the children are NAME-<slot>-<n>)",
    )
    parser.add_argument("--no-cron", action="store_true", help="do not run the cron scheduler")
    parser.add_argument("--cron-only", action="store_true", help="run only the cron scheduler, no jobs")
    parser.add_argument("--no-shipper", action="store_true", help="do not ship the job log to PostgreSQL")
    parser.add_argument(
        "--shipper-only", action="store_true", help="only ship the job log to PostgreSQL (no jobs, no cron)"
    )
    logsetup.add_arguments(parser)
    parser.add_argument(
        "--processes",
        type=processes,
        default=None,
        metavar="N",
        help="run N worker processes under a supervisor that replaces those that die "
        "('auto': one per CPU; default: one worker in this process, no supervisor)",
    )
    parser.add_argument(
        "--max-jobs-per-process",
        type=int,
        default=None,
        metavar="M",
        help="a worker process exits gracefully after about M jobs, >= 1, and the supervisor starts "
        "a fresh one (implies --processes 1 unless given; default: no limit)",
    )
    return parser


def worker_main(argv: Sequence[str] | None = None) -> int:
    parser = worker_parser()
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    if args.max_jobs_per_process is not None and args.max_jobs_per_process < 1:
        parser.error(f"--max-jobs-per-process must be >= 1, got {args.max_jobs_per_process}")
    if args.max_jobs_per_process is not None and (args.cron_only or args.shipper_only):
        parser.error("--max-jobs-per-process counts jobs: not with --cron-only or --shipper-only")
    if sum((args.no_cron and args.cron_only, args.cron_only and args.shipper_only)):
        parser.error("--cron-only excludes --no-cron and --shipper-only")
    if args.no_shipper and args.shipper_only:
        parser.error("--no-shipper and --shipper-only exclude each other")
    try:
        logsetup.configure(args.log_level, args.log_json)
        app = load_app(args.app)
    except (UsageError, EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    options: dict[str, Any] = {
        "queues": args.queues,
        "concurrency": args.concurrency,
        "grace_period": args.grace_period,
        "name": args.name,
        "cron": not args.no_cron and not args.shipper_only,
        "jobs": not args.cron_only and not args.shipper_only,
        "shipper": not args.no_shipper and not args.cron_only,
    }
    child = pool.is_child()
    if not child and (args.processes is not None or args.max_jobs_per_process is not None):
        return supervise(app, options, child_argv(parser, args), args)
    if child:
        pool.watch_supervisor()
        # The supervisor names each child (NAME-<slot>-<n> with --name).
        options.update(name=os.environ.get(pool.NAME_ENV) or args.name, max_jobs=args.max_jobs_per_process)

    async def main() -> None:
        async with app:
            await app.worker(**options, handle_signals=True).run()  # it owns this process

    return run(main)


def supervise(app: Engine, options: dict[str, Any], child_argv: list[str], args: argparse.Namespace) -> int:
    """Run a pool of ``python -m engine.worker`` children; this process runs no job itself."""

    async def check() -> None:
        # What a child would fail on at once, found here: one line and exit 1, not a pool
        # restarting children that cannot work.
        async with app:
            app.worker(**options, handle_signals=False)

    async def supervise() -> int:
        supervisor = pool.Pool(
            [sys.executable, "-m", "engine.worker", *child_argv],
            args.processes or 1,
            grace_period=args.grace_period,
            recycle=args.max_jobs_per_process is not None,
        )
        if args.name:
            supervisor.prefix = args.name  # children: NAME-<slot>-<generation>
        return await supervisor.run()

    return run(check) or run(supervise)
