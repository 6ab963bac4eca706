"""Prometheus metrics in the text exposition format (version 0.0.4), read from Redis.

Gauges are read at scrape time; counters and the duration histogram come from each queue's
stats hash, which the Lua scripts update atomically with every outcome. The outcome counters
and the histogram are a series per (queue, task); what a queue counted without a task (a
waiting job cancelled, a poison message, counts from before tasks were counted) is the
series with ``task=""``, so that ``sum by (queue)`` is the queue's total.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import inspector
from engine.dashboard.taskstats import DURATION_BOUNDS as DURATION_BOUNDS
from engine.dashboard.taskstats import Figures, remainder, summed
from engine.history.shipper import outbox_events

if TYPE_CHECKING:
    from engine.client.app import Engine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

GAUGES = (
    ("engine_queue_depth", "Jobs waiting to be fetched (stream entries not yet delivered)."),
    ("engine_queue_lag_seconds", "Age of the oldest waiting job, in seconds (0 when none waits)."),
    ("engine_queue_pending", "Entries delivered to workers and not yet acknowledged (pending list)."),
    ("engine_queue_active", "Jobs running now, as reported by live workers' heartbeats."),
    ("engine_queue_delayed", "Jobs waiting for their due time (retries and delayed jobs)."),
    ("engine_dlq_depth", "Dead letters (failed jobs) in the queue's dead-letter stream."),
    ("engine_queue_paused", "1 while the queue is paused (no job of it starts), else 0."),
    (
        "engine_queue_throttled",
        "Waiting jobs flow control (pause, concurrency or rate limit) holds back now.",
    ),
    (
        "engine_outbox_length",
        "Job-log events not yet shipped to PostgreSQL (alarm when it keeps growing: no shipper runs).",
    ),
)
COUNTERS = (
    ("engine_jobs_enqueued_total", "enqueued", "Jobs enqueued."),
    ("engine_jobs_reclaimed_total", "reclaimed", "Entries reclaimed from workers that stopped answering."),
    ("engine_jobs_replayed_total", "replayed", "Dead letters replayed."),
)
"""Counted per queue only: the stats hold no task for these."""
TASK_COUNTERS = (
    ("engine_jobs_completed_total", "completed", "Jobs completed."),
    ("engine_jobs_failed_total", "failed", "Jobs that failed for good (dead-lettered)."),
    ("engine_jobs_retried_total", "retried", "Failed attempts scheduled for a retry."),
    ("engine_jobs_cancelled_total", "cancelled", "Jobs cancelled."),
)
"""Counted per (queue, task)."""


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _per_task(hashes: list[dict[str, str]]) -> dict[str, Figures]:
    """Task -> figures of one queue (its partitions' hashes added up), "" for the rest."""
    queue, tasks = summed(hashes)
    rest = remainder(queue, tasks)
    # An idle queue still gets its series (all zero), as before tasks were counted.
    if any(rest.counts.values()) or rest.observed or not tasks:
        tasks[""] = rest
    return dict(sorted(tasks.items()))


async def render(engine: Engine) -> str:
    gateway = await engine.ready()
    stats = await engine.stats()
    lags = await inspector.queue_lags(engine, list(stats))
    beats = await inspector.workers(engine)
    running = [job_id for beat in beats for job_id in beat.running]

    gauges: dict[str, dict[str, float]] = {name: {} for name, _ in GAUGES}
    counters: dict[str, dict[str, float]] = {name: {} for name, _, _ in COUNTERS}
    by_task: dict[str, dict[str, Figures]] = {}
    for queue, counts in stats.items():
        # A partitioned queue is one queue here: its partitions' figures added up.
        scrapes = [await gateway.reads.scrape(p, running) for p in engine.layout.partitions(queue)]
        gauges["engine_queue_depth"][queue] = counts["waiting"]
        gauges["engine_queue_lag_seconds"][queue] = round(lags.get(queue, 0.0), 3)
        # Delivered and not yet acknowledged: what queue_stats counts as active.
        gauges["engine_queue_pending"][queue] = counts["active"]
        gauges["engine_queue_active"][queue] = sum(s.owned for s in scrapes)
        gauges["engine_queue_delayed"][queue] = counts["delayed"]
        gauges["engine_dlq_depth"][queue] = counts["dlq"]
        gauges["engine_queue_paused"][queue] = min(1, counts.get("paused", 0))
        gauges["engine_queue_throttled"][queue] = counts.get("throttled", 0)
        gauges["engine_outbox_length"][queue] = sum(
            outbox_events(s.outbox_length, s.outbox_extra) for s in scrapes
        )
        for name, field, _ in COUNTERS:
            counters[name][queue] = counts[field]
        by_task[queue] = _per_task([s.stats for s in scrapes])

    lines: list[str] = []
    for name, help_text in GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{queue="{_label(q)}"}} {_number(v)}' for q, v in gauges[name].items()]
    for name, _, help_text in COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines += [f'{name}{{queue="{_label(q)}"}} {_number(v)}' for q, v in counters[name].items()]
    for name, kind, help_text in TASK_COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        for queue, tasks in by_task.items():
            for task, figures in tasks.items():
                labels = f'queue="{_label(queue)}",task="{_label(task)}"'
                lines.append(f"{name}{{{labels}}} {figures.counts[kind]}")
    name = "engine_job_duration_seconds"
    lines += [f"# HELP {name} Run time of job attempts, in seconds.", f"# TYPE {name} histogram"]
    for queue, tasks in by_task.items():
        for task, figures in tasks.items():
            labels = f'queue="{_label(queue)}",task="{_label(task)}"'
            buckets = figures.cumulative()
            lines += [f'{name}_bucket{{{labels},le="{le}"}} {n}' for le, n in buckets]
            lines.append(f"{name}_sum{{{labels}}} {_number(figures.sum_ms / 1000)}")
            lines.append(f"{name}_count{{{labels}}} {buckets[-1][1]}")
    lines += [
        "# HELP engine_workers_alive Workers that sent a heartbeat in the last 15 seconds.",
        "# TYPE engine_workers_alive gauge",
        f"engine_workers_alive {len(beats)}",
    ]
    return "\n".join(lines) + "\n"
