"""Command lines: ``python -m engine.worker`` and ``python -m engine <command>``.

Errors a user can fix (bad MODULE:APP, bad URL, unreachable server, bad arguments) print
one line and exit 2 or 1, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

import anyio

from engine import log as logsetup
from engine.client.app import Engine
from engine.core.errors import ConfigurationError, EngineError
from engine.worker import pool


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
    if callable(obj) and not isinstance(obj, Engine) and not isinstance(obj, type):
        # An app factory (def create_app() -> Engine) is welcome; other callables are not.
        try:
            inspect.signature(obj).bind()
        except (TypeError, ValueError):
            raise UsageError(f"{spec!r} is a function that needs arguments, not an engine.Engine") from None
        obj = obj()
    if not isinstance(obj, Engine):
        raise UsageError(f"{spec!r} is a {type(obj).__name__}, not an engine.Engine")
    return obj


def _run(main: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    try:
        return int(anyio.run(main) or 0)
    except (UsageError, EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        return 130


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _processes(value: str) -> int:
    if value == "auto":
        return pool.cpu_count()
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'auto', got {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or 'auto'), got {count}")
    return count


def _child_argv(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The command line of a pool's child: the supervisor's own, less ``--processes``.
    Rebuilt from the parser, so an option added to it later reaches the children too."""
    argv = [args.app]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "processes"):
            continue
        value = getattr(args, action.dest)
        flag = action.option_strings[-1]
        if action.nargs == 0:  # a flag, given or not
            if value:
                argv.append(flag)
        elif value is not None:
            argv += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    return argv


def worker_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--cron-only", action="store_true", help="run only the cron scheduler, no jobs")
    parser.add_argument("--no-shipper", action="store_true", help="do not ship the job log to PostgreSQL")
    parser.add_argument(
        "--shipper-only", action="store_true", help="only ship the job log to PostgreSQL (no jobs, no cron)"
    )
    parser.add_argument("--log-level", default=os.environ.get("ENGINE_LOG_LEVEL", "info"))
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    parser.add_argument(
        "--processes",
        type=_processes,
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
        help="a worker process exits gracefully after about M jobs and the supervisor starts "
        "a fresh one (implies --processes 1 unless given)",
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
        "cron": not args.no_cron and not args.shipper_only,
        "jobs": not args.cron_only and not args.shipper_only,
        "shipper": not args.no_shipper and not args.cron_only,
    }
    child = pool.is_child()
    if not child and (args.processes is not None or args.max_jobs_per_process is not None):
        return _supervise(app, options, _child_argv(parser, args), args)
    if child:
        pool.watch_supervisor()
        options.update(name=os.environ.get(pool.NAME_ENV) or None, max_jobs=args.max_jobs_per_process)

    async def main() -> None:
        async with app:
            await app.worker(**options).run()

    return _run(main)


def _supervise(app: Engine, options: dict[str, Any], child_argv: list[str], args: argparse.Namespace) -> int:
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
        return await supervisor.run()

    return _run(check) or _run(supervise)


def _confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError(f"{question} Refusing without a terminal to confirm; pass --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _print_job_table(jobs: Sequence[Any]) -> None:
    if not jobs:
        print("no dead letters")
        return
    print(f"{'job id':28} {'task':20} {'attempts':>8}  {'failed at':20} error")
    for job in jobs:
        when = job.finished_at.strftime("%Y-%m-%d %H:%M:%S") if job.finished_at else "-"
        error = (job.error or "").splitlines()[0][:80] if job.error else ""
        print(f"{job.id:28} {job.task or '?':20} {job.attempts:>8}  {when:20} {error}")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app",
        metavar="MODULE:APP",
        default=None,
        help="use this app (default: Engine() from ENGINE_REDIS_URL / ENGINE_NAMESPACE)",
    )
    parser.add_argument("--redis-url", default=None, help="overrides ENGINE_REDIS_URL")
    parser.add_argument("--namespace", default=None, help="overrides ENGINE_NAMESPACE")


def _engine_from(args: argparse.Namespace) -> Engine:
    if args.app:
        return load_app(args.app)
    return Engine(args.redis_url, namespace=args.namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Engine command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="run a self-contained demo on an embedded Valkey",
        description="Start an embedded Valkey and PostgreSQL and a worker, run a mix of jobs, "
        "print a summary and stop everything it started. Ctrl-C, SIGTERM and SIGHUP stop "
        "everything too; the exit code is then 128 + the signal number (130, 143, 129), or 0 "
        "if the demo had finished (--keep, after the summary).",
    )
    demo.add_argument("--jobs", type=int, default=500, help="jobs to enqueue (default 500)")
    demo.add_argument("--data-dir", default=".engine-demo", help="where the embedded servers keep data")
    demo.add_argument("--port", type=int, default=0, help="dashboard port (default: a free one)")
    demo.add_argument("--keep", action="store_true", help="keep everything running after the summary")
    demo.add_argument("--cluster", action="store_true", help="run on a 6-node Valkey Cluster (3 masters)")

    stats = sub.add_parser("stats", help="per-queue counts as JSON")
    _add_common(stats)

    enqueue = sub.add_parser("enqueue", help="enqueue a job by task name; prints its id")
    enqueue.add_argument("task")
    enqueue.add_argument("--args", default="[]", help="JSON list of positional arguments")
    enqueue.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    enqueue.add_argument("--queue", default=None, help="a queue other than the task's own")
    enqueue.add_argument("--delay", type=float, metavar="SECONDS", help="run it this much later")
    enqueue.add_argument("--timeout", type=float, metavar="SECONDS", help="its timeout (default: the task's)")
    enqueue.add_argument("--max-attempts", type=int, metavar="N", help="its attempts (default: the task's)")
    enqueue.add_argument(
        "--idempotency-key", default=None, metavar="KEY", help="enqueue at most once per key within its TTL"
    )
    _add_common(enqueue)

    migrate = sub.add_parser("migrate", help="create or upgrade the job-log tables in PostgreSQL")
    migrate.add_argument("--database-url", default=None, help="overrides ENGINE_DATABASE_URL")
    _add_common(migrate)

    prune = sub.add_parser("prune", help="delete old job history from PostgreSQL (in small batches)")
    prune.add_argument(
        "--completed-older-than",
        type=float,
        default=None,
        metavar="DAYS",
        help="completed and cancelled jobs older than this (default: the app's history_retention)",
    )
    prune.add_argument(
        "--failed-older-than",
        type=float,
        default=None,
        metavar="DAYS",
        help="also failed jobs older than this (default: failed jobs are kept)",
    )
    prune.add_argument("--database-url", default=None, help="overrides ENGINE_DATABASE_URL")
    _add_common(prune)

    cron = sub.add_parser("cron", help="cron schedules")
    cron_sub = cron.add_subparsers(dest="action", required=True)
    cron_list = cron_sub.add_parser("list", help="schedules with next and last run and the leader")
    cron_list.add_argument("--json", action="store_true", help="print JSON")
    _add_common(cron_list)

    dlq = sub.add_parser("dlq", help="inspect, replay or purge a queue's dead letters")
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    dlq_list = dlq_sub.add_parser("list", help="newest dead letters first")
    dlq_list.add_argument("--limit", type=int, default=50)
    dlq_list.add_argument("--task", default=None, help="only this task's")
    dlq_list.add_argument("--json", action="store_true", help="print JSON")
    dlq_replay = dlq_sub.add_parser("replay", help="run dead-lettered jobs again")
    dlq_replay.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    dlq_replay.add_argument("--all", action="store_true", help="replay every dead letter (asks first)")
    dlq_replay.add_argument("--task", default=None, help="with --all: only this task's")
    dlq_purge = dlq_sub.add_parser("purge", help="delete every dead letter and its job data (asks first)")
    for p in (dlq_list, dlq_replay, dlq_purge):
        p.add_argument("--queue", default="default")
        _add_common(p)
    for p in (dlq_replay, dlq_purge):
        p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from engine.demo import run_demo

        if args.jobs < 1:
            parser.error("--jobs must be >= 1")
        return int(run_demo(args.jobs, args.data_dir, args.port, args.keep, args.cluster))
    try:
        app = _engine_from(args)
    except (UsageError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "database_url", None):
        app.database_url = args.database_url
    handlers = {
        "stats": _stats,
        "enqueue": _enqueue,
        "dlq": _dlq,
        "cron": _cron,
        "migrate": _migrate,
        "prune": _prune,
    }
    handler = handlers[args.command]
    return _run(lambda: handler(app, args))


async def _stats(app: Engine, args: argparse.Namespace) -> int:
    async with app:
        print(json.dumps(await app.stats(), indent=2))
    return 0


async def _enqueue(app: Engine, args: argparse.Namespace) -> int:
    try:
        call_args = json.loads(args.args)
        call_kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args/--kwargs must be JSON: {exc}") from None
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        raise UsageError("--args must be a JSON list and --kwargs a JSON object")
    options = {
        name: value
        for name in ("queue", "delay", "timeout", "max_attempts", "idempotency_key")
        if (value := getattr(args, name)) is not None
    }
    async with app:
        try:
            job = await app.with_options(args.task, **options).enqueue(*call_args, **call_kwargs)
        except (TypeError, ConfigurationError) as exc:
            raise UsageError(str(exc)) from None
        print(job.id)
    return 0


async def _migrate(app: Engine, args: argparse.Namespace) -> int:
    try:
        version = await app.migrate()
    finally:
        await app.close()
    print(f"job-log schema is at version {version}")
    return 0


async def _prune(app: Engine, args: argparse.Namespace) -> int:
    def days(value: float | None, flag: str) -> timedelta | None:
        if value is None:
            return None
        if not value >= 0:
            raise UsageError(f"{flag} must be a number of days >= 0")
        return timedelta(days=value)

    try:
        deleted = await app.prune(
            completed_older_than=days(args.completed_older_than, "--completed-older-than"),
            failed_older_than=days(args.failed_older_than, "--failed-older-than"),
        )
    finally:
        await app.close()
    print(f"deleted {deleted} job(s) from the history")
    return 0


async def _cron(app: Engine, args: argparse.Namespace) -> int:
    from engine.inspector import cron_schedules

    async with app:
        rows = await cron_schedules(app)
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return 0
    if not rows:
        print("no schedules announced yet (a worker announces its app's schedules when it starts)")
        return 0
    header = ("schedule", "expression", "time zone", "next run (UTC)", "last run (UTC)")
    print("{:24} {:16} {:18} {:20} {:20} leader".format(*header))
    for row in rows:
        print(
            f"{row.name:24} {row.expr:16} {row.tz:18} {_when(row.next_run):20} {_when(row.last_run):20} "
            f"{row.leader or '-'}"
        )
    return 0


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


async def _dlq(app: Engine, args: argparse.Namespace) -> int:
    if args.action == "list" and args.limit < 1:
        raise UsageError("--limit must be >= 1")
    async with app:
        dead = app.dlq(args.queue)
        if args.action == "list":
            jobs = await dead.list(limit=args.limit, task=args.task)
            if args.json:
                import msgspec

                print(msgspec.json.format(msgspec.json.encode(jobs)).decode())
            else:
                _print_job_table(jobs)
            return 0
        if args.action == "replay":
            if args.all == bool(args.job_ids):
                raise UsageError("give JOB_IDs to replay, or --all (not both)")
            if args.job_ids:
                for job_id in args.job_ids:
                    done = await dead.replay(job_id)
                    print(f"{job_id}: {'replayed' if done else 'not failed; left alone'}")
                return 0
            count = len(await dead.list(limit=max(1, await dead.count()), task=args.task))
            what = f"{count} dead letter(s) of queue {args.queue!r}" + (
                f" (task {args.task})" if args.task else ""
            )
            if count == 0 or not _confirm(f"Replay {what}?", args.yes):
                print("nothing replayed")
                return 0
            print(f"replayed {await dead.replay_all(task=args.task)} job(s)")
            return 0
        count = await dead.count()
        if count == 0 or not _confirm(
            f"Delete {count} dead letter(s) of queue {args.queue!r} and their job data?", args.yes
        ):
            print("nothing purged")
            return 0
        print(f"purged {await dead.purge()} dead letter(s)")
        return 0
