"""The overview's figures: queues with their lag, throughput per minute, workers, cron, tasks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from engine import inspector
from engine.core.taskdef import TaskAnnouncement
from engine.dashboard.views import history_enabled

if TYPE_CHECKING:
    from engine.client.app import Engine

THROUGHPUT_MINUTES = 60
# The counts the overview adds up over every queue ("dlq" is a count, not a status).
TOTALS = ("waiting", "active", "delayed", "completed", "failed", "dlq")


async def queue_summaries(engine: Engine) -> list[dict[str, Any]]:
    stats = await engine.stats()
    lags = await inspector.queue_lags(engine, list(stats))
    return [{"name": q, **counts, "lag_seconds": round(lags.get(q, 0.0), 3)} for q, counts in stats.items()]


async def queue_summary(engine: Engine, queue: str) -> dict[str, Any]:
    """One queue's summary (a queue :func:`engine.dashboard.checks.require_queue` accepted);
    a partitioned queue's has its partitions' counts too."""
    summary = next(q for q in await queue_summaries(engine) if q["name"] == queue)
    gateway = await engine.ready()
    settings = await gateway.flow_settings(engine.layout.partitions(queue)[:1])
    first = next(iter(settings.values()), {})
    summary["rate_limit"] = first.get("rate") or None
    keyed = first.get("key_concurrency", "")
    summary["key_concurrency"] = int(keyed) if keyed.isdigit() else None
    if engine.layout.count(queue) > 1:
        partitions = await engine.partition_stats(queue)
        summary["partitions"] = [{"name": name, **counts} for name, counts in partitions.items()]
    return summary


async def throughput(
    engine: Engine, queues: Sequence[str], minutes: int = THROUGHPUT_MINUTES
) -> list[dict[str, Any]]:
    """Per minute, summed over ``queues``: completed, failed and the failure rate."""
    out = []
    for minute, completed, failed in await inspector.throughput_totals(engine, queues, minutes):
        done = completed + failed
        out.append(
            {
                "minute": datetime.fromtimestamp(minute, tz=UTC),
                "completed": completed,
                "failed": failed,
                "failure_rate": round(failed / done, 4) if done else 0.0,
            }
        )
    return out


async def workers(engine: Engine) -> list[dict[str, Any]]:
    now = engine.clock.time()
    return [
        {
            "id": beat.id,
            "host": beat.host,
            "pid": beat.pid,
            "queues": beat.queues,
            "concurrency": beat.concurrency,
            "busy": beat.busy,
            "processed": beat.processed,
            "running": beat.running,
            "started_at": datetime.fromtimestamp(beat.started_at, tz=UTC),
            "seen_at": datetime.fromtimestamp(beat.seen_at, tz=UTC),
            "seen_seconds_ago": round(max(0.0, now - beat.seen_at), 1),
        }
        for beat in await inspector.workers(engine)
    ]


async def tasks(engine: Engine) -> list[dict[str, Any]]:
    """Tasks of this app and those workers announced, with the signature callers must match."""
    out: dict[str, dict[str, Any]] = {}
    gateway = await engine.ready()
    for name, raw in (await gateway.reads.task_announcements()).items():
        try:
            ann = msgspec.json.decode(raw, type=TaskAnnouncement)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        sig = ann.signature()
        out[name] = {
            "name": name,
            "queue": ann.queue,
            "timeout": ann.timeout,
            "max_attempts": ann.max_attempts,
            "signature": None if sig is None else f"{name}{sig}",
        }
    for name, task in engine.tasks.items():
        sig = task.spec.signature
        out[name] = {
            "name": name,
            "queue": task.queue,
            "timeout": task.timeout,
            "max_attempts": task.max_attempts,
            "signature": None if sig is None else f"{name}{sig}",
        }
    return [out[k] for k in sorted(out)]


async def task_max_attempts(engine: Engine, task: str) -> int | None:
    """The attempts a job of ``task`` gets when it was enqueued without its own limit."""
    for known in await tasks(engine):
        if known["name"] == task:
            return int(known["max_attempts"])
    return None


async def overview(engine: Engine) -> dict[str, Any]:
    queues = await queue_summaries(engine)
    totals = {k: sum(int(q[k]) for q in queues) for k in TOTALS}
    beats = await workers(engine)
    return {
        "queues": queues,
        "totals": totals,
        "throughput": await throughput(engine, [q["name"] for q in queues]),
        "workers": beats,
        "history": history_enabled(engine),
    }
