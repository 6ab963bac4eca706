"""``python -m engine <command>``: demo, health, stats, enqueue, migrate, prune, cron and dlq."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from engine.cli import health as health_checks
from engine.cli.common import UsageError, add_common, add_version, confirm, engine_from, prog, run
from engine.client.app import Engine
from engine.core.errors import ConfigurationError, EngineError
from engine.inspector import ALIVE_WITHIN_S


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("python -m engine", "engine"),
        description="Engine command line: the demo, health probe, stats, enqueue, job-log schema and "
        "pruning, cron schedules and dead letters. Run workers with `python -m engine.worker` "
        "(engine-worker) and the dashboard with `python -m engine.dashboard`.",
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")

    demo = sub.add_parser(
        "demo",
        help="run a self-contained demo on an embedded Valkey and PostgreSQL",
        description="Start an embedded Valkey and PostgreSQL and a worker, run a mix of jobs, "
        "print a summary and stop everything it started. Ctrl-C, SIGTERM and SIGHUP stop "
        "everything too; the exit code is then 128 + the signal number (130, 143, 129), or 0 "
        "if the demo had finished (--keep, after the summary).",
    )
    demo.add_argument(
        "--jobs", type=int, default=500, metavar="N", help="jobs to enqueue, >= 1 (default 500)"
    )
    demo.add_argument(
        "--data-dir",
        default=".engine-demo",
        metavar="DIR",
        help="where the embedded servers keep their data and the worker its log (default .engine-demo)",
    )
    demo.add_argument(
        "--port", type=int, default=0, metavar="PORT", help="dashboard port (default 0: a free one)"
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep everything running after the summary, until Ctrl-C"
    )
    demo.add_argument(
        "--cluster",
        action="store_true",
        help="run on a 6-node Valkey Cluster (3 masters) instead of one server",
    )

    health = sub.add_parser(
        "health",
        help="probe Redis, PostgreSQL and workers for a container health check (exit 0 or 1)",
        description="Check that Redis answers, that PostgreSQL does too when a database URL is "
        "configured, and optionally that workers send heartbeats; print one line saying what was "
        "checked and what failed. Exit 0 when healthy, 1 when not (also for a bad --app or URL).",
    )
    health.add_argument(
        "--min-workers",
        type=health_checks.count,
        default=0,
        metavar="N",
        help="also require at least N workers of the namespace with a heartbeat in the last "
        f"{ALIVE_WITHIN_S:g} s (default 0: workers are not checked; --cron-only and "
        "--shipper-only workers send none)",
    )
    health.add_argument(
        "--worker",
        action="append",
        default=None,
        metavar="NAME",
        help="also require a fresh heartbeat from the worker named NAME (its --name; for a "
        "--processes pool started with --name NAME, any of its children); repeatable (default: none)",
    )
    health.add_argument(
        "--timeout",
        type=health_checks.seconds,
        default=5.0,
        metavar="SECONDS",
        help="bound on the whole check, > 0; what has not answered by then fails (default 5)",
    )
    health.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help="check this PostgreSQL (default: the app's database_url, else ENGINE_DATABASE_URL, "
        "else PostgreSQL is not checked)",
    )
    add_common(health)

    stats = sub.add_parser(
        "stats",
        help="per-queue counts as JSON",
        description="Print, as JSON, per queue: waiting, active, delayed, completed, failed, dlq.",
    )
    add_common(stats)

    enqueue = sub.add_parser(
        "enqueue",
        help="enqueue a job by task name; prints its id",
        description="Enqueue one job of a task a worker has announced (or that --app registers); "
        "print its id. The arguments are checked against the task's signature.",
    )
    enqueue.add_argument("task", metavar="TASK", help="the task's name, e.g. export")
    enqueue.add_argument(
        "--args", default="[]", metavar="JSON", help="JSON list of positional arguments (default [])"
    )
    enqueue.add_argument(
        "--kwargs", default="{}", metavar="JSON", help="JSON object of keyword arguments (default {})"
    )
    enqueue.add_argument(
        "--queue",
        default=None,
        metavar="QUEUE",
        help="a queue other than the task's own (default: the task's)",
    )
    enqueue.add_argument(
        "--delay", type=float, metavar="SECONDS", help="run it this many seconds later (default: at once)"
    )
    enqueue.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="its timeout in seconds (default: the task's)"
    )
    enqueue.add_argument("--max-attempts", type=int, metavar="N", help="its attempts (default: the task's)")
    enqueue.add_argument(
        "--idempotency-key",
        default=None,
        metavar="KEY",
        help="enqueue at most once per key within the app's idempotency TTL (default: no key)",
    )
    add_common(enqueue)

    migrate = sub.add_parser(
        "migrate",
        help="create or upgrade the job-log tables in PostgreSQL",
        description="Apply the job-log schema (idempotent) and print its version.",
    )
    migrate.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help="postgresql:// URL (default: the app's database_url, else ENGINE_DATABASE_URL)",
    )
    add_common(migrate)

    prune = sub.add_parser(
        "prune",
        help="delete old job history from PostgreSQL (in small batches)",
        description="Delete old jobs and their log lines from the PostgreSQL history; print how many.",
    )
    prune.add_argument(
        "--completed-older-than",
        type=float,
        default=None,
        metavar="DAYS",
        help="completed and cancelled jobs older than this many days, >= 0 (default: the app's "
        "history_retention, 30 days unless set)",
    )
    prune.add_argument(
        "--failed-older-than",
        type=float,
        default=None,
        metavar="DAYS",
        help="also failed jobs older than this many days, >= 0 (default: the app's "
        "failed_history_retention; unset, failed jobs are kept)",
    )
    prune.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help="postgresql:// URL (default: the app's database_url, else ENGINE_DATABASE_URL)",
    )
    add_common(prune)

    cron = sub.add_parser("cron", help="cron schedules", description="Inspect the cron schedules.")
    cron_sub = cron.add_subparsers(dest="action", required=True, metavar="ACTION", help="one of:")
    cron_list = cron_sub.add_parser(
        "list",
        help="schedules with next and last run and the leader",
        description="The schedules workers announced: expression, time zone, next and last run "
        "(UTC) and the worker leading each queue's scheduler.",
    )
    cron_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_common(cron_list)

    dlq = sub.add_parser(
        "dlq",
        help="inspect, replay or purge a queue's dead letters",
        description="A queue's dead letters: jobs that failed for good.",
    )
    dlq_sub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION", help="one of:")
    dlq_list = dlq_sub.add_parser(
        "list", help="newest dead letters first", description="List a queue's dead letters, newest first."
    )
    dlq_list.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N dead letters, >= 1 (default 50)"
    )
    dlq_list.add_argument("--task", default=None, metavar="TASK", help="only this task's (default: all)")
    dlq_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    dlq_replay = dlq_sub.add_parser(
        "replay",
        help="run dead-lettered jobs again",
        description="Put dead-lettered jobs back on their queue with fresh attempts: the JOB_IDs "
        "given, or every one with --all (asks first).",
    )
    dlq_replay.add_argument(
        "job_ids", nargs="*", metavar="JOB_ID", help="the jobs to replay (or --all, not both)"
    )
    dlq_replay.add_argument("--all", action="store_true", help="replay every dead letter (asks first)")
    dlq_replay.add_argument(
        "--task", default=None, metavar="TASK", help="with --all: only this task's (default: all)"
    )
    dlq_purge = dlq_sub.add_parser(
        "purge",
        help="delete every dead letter and its job data (asks first)",
        description="Delete every dead letter of the queue, with the jobs' data in Redis and their "
        "rows in the PostgreSQL history (asks first).",
    )
    for p in (dlq_list, dlq_replay, dlq_purge):
        p.add_argument(
            "--queue",
            default="default",
            metavar="QUEUE",
            help="the queue whose dead letters (default 'default')",
        )
        add_common(p)
    for p in (dlq_replay, dlq_purge):
        p.add_argument(
            "--yes", "-y", action="store_true", help="do not ask for confirmation (needed without a terminal)"
        )

    queue = sub.add_parser(
        "queue",
        help="pause or resume a queue, or show its flow control",
        description="Flow control of a queue, held in Redis for every worker: pause stops new "
        "starts within a second (running jobs finish, enqueues still land), resume starts them again.",
    )
    queue_sub = queue.add_subparsers(dest="action", required=True, metavar="ACTION", help="one of:")
    for action, text in (
        ("pause", "start no new job of the queue, on any worker"),
        ("resume", "start the queue's jobs again"),
        ("status", "paused or not, limits, running and throttled jobs (JSON)"),
    ):
        p = queue_sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("queue", metavar="QUEUE", help="the queue's name")
        add_common(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from engine.demo import run_demo

        if args.jobs < 1:
            parser.error("--jobs must be >= 1")
        return int(run_demo(args.jobs, args.data_dir, args.port, args.keep, args.cluster))
    if args.command == "health":  # exit 0 or 1 only, whatever fails: see engine.cli.health
        return health_checks.main(args)
    try:
        app = engine_from(args)
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
        "queue": _queue,
        "migrate": _migrate,
        "prune": _prune,
    }
    handler = handlers[args.command]
    return run(lambda: handler(app, args))


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


async def _queue(app: Engine, args: argparse.Namespace) -> int:
    async with app:
        try:
            if args.action == "pause":
                await app.pause(args.queue)
            elif args.action == "resume":
                await app.resume(args.queue)
            else:
                paused = await app.is_paused(args.queue)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
        if args.action == "status":
            stats = (await app.stats()).get(args.queue, {})
            settings = await app.gateway.flow_settings(app.layout.partitions(args.queue)[:1])
            first = next(iter(settings.values()), {})
            keyed = first.get("key_concurrency", "")
            status = {
                "queue": args.queue,
                "paused": paused,
                "concurrency": stats.get("concurrency") or None,
                "rate_limit": first.get("rate") or None,
                "key_concurrency": int(keyed) if keyed.isdigit() else None,
                "running": stats.get("running", 0),
                "throttled": stats.get("throttled", 0),
                "waiting": stats.get("waiting", 0),
            }
            print(json.dumps(status, indent=2))
        else:
            print(f"queue {args.queue!r} {'paused' if args.action == 'pause' else 'resumed'}")
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
            if count == 0 or not confirm(f"Replay {what}?", args.yes):
                print("nothing replayed")
                return 0
            print(f"replayed {await dead.replay_all(task=args.task)} job(s)")
            return 0
        count = await dead.count()
        if count == 0 or not confirm(
            f"Delete {count} dead letter(s) of queue {args.queue!r} and their job data?", args.yes
        ):
            print("nothing purged")
            return 0
        print(f"purged {await dead.purge()} dead letter(s)")
        return 0


def _print_job_table(jobs: Sequence[Any]) -> None:
    if not jobs:
        print("no dead letters")
        return
    print(f"{'job id':28} {'task':20} {'attempts':>8}  {'failed at':20} error")
    for job in jobs:
        when = job.finished_at.strftime("%Y-%m-%d %H:%M:%S") if job.finished_at else "-"
        error = (job.error or "").splitlines()[0][:80] if job.error else ""
        print(f"{job.id:28} {job.task or '?':20} {job.attempts:>8}  {when:20} {error}")
