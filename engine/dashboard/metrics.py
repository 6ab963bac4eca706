"""Prometheus metrics in the text exposition format (version 0.0.4), read from Redis.

Gauges are read at scrape time; counters and the duration histogram come from each queue's
stats hash, which the Lua scripts update atomically with every outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import inspector
from engine.history.shipper import outbox_events

if TYPE_CHECKING:
    from engine.client.app import Engine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Upper bounds (seconds) of the duration histogram, as scripts/finish.lua buckets them.
DURATION_BOUNDS = (
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.1",
    "0.25",
    "0.5",
    "1",
    "2.5",
    "5",
    "10",
    "30",
    "60",
    "300",
)

GAUGES = (
    ("engine_queue_depth", "Jobs waiting to be fetched (stream entries not yet delivered)."),
    ("engine_queue_lag_seconds", "Age of the oldest waiting job, in seconds (0 when none waits)."),
    ("engine_queue_pending", "Entries delivered to workers and not yet acknowledged (pending list)."),
    ("engine_queue_active", "Jobs running now, as reported by live workers' heartbeats."),
    ("engine_queue_delayed", "Jobs waiting for their due time (retries and delayed jobs)."),
    ("engine_dlq_depth", "Dead letters (failed jobs) in the queue's dead-letter stream."),
    (
        "engine_outbox_length",
        "Job-log events not yet shipped to PostgreSQL (alarm when it keeps growing: no shipper runs).",
    ),
)
COUNTERS = (
    ("engine_jobs_enqueued_total", "enqueued", "Jobs enqueued."),
    ("engine_jobs_completed_total", "completed", "Jobs completed."),
    ("engine_jobs_failed_total", "failed", "Jobs that failed for good (dead-lettered)."),
    ("engine_jobs_retried_total", "retried", "Failed attempts scheduled for a retry."),
    ("engine_jobs_reclaimed_total", "reclaimed", "Entries reclaimed from workers that stopped answering."),
    ("engine_jobs_cancelled_total", "cancelled", "Jobs cancelled."),
    ("engine_jobs_replayed_total", "replayed", "Dead letters replayed."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _histogram(stats: dict[str, str]) -> tuple[list[tuple[str, int]], float, int]:
    """(cumulative buckets, seconds in all, count) of the durations in a queue's stats hash."""
    cumulative = 0
    buckets: list[tuple[str, int]] = []
    for bound in DURATION_BOUNDS:
        cumulative += int(stats.get(f"d:{bound}", 0) or 0)
        buckets.append((bound, cumulative))
    total = cumulative + int(stats.get("d:+Inf", 0) or 0)
    buckets.append(("+Inf", total))
    return buckets, int(stats.get("d:sum_ms", 0) or 0) / 1000, total


def _summed(
    histograms: list[tuple[list[tuple[str, int]], float, int]],
) -> tuple[list[tuple[str, int]], float, int]:
    buckets = [(bound, sum(h[0][i][1] for h in histograms)) for i, (bound, _) in enumerate(histograms[0][0])]
    return buckets, sum(h[1] for h in histograms), sum(h[2] for h in histograms)


async def render(engine: Engine) -> str:
    gateway = await engine.ready()
    stats = await engine.stats()
    lags = await inspector.queue_lags(engine, list(stats))
    beats = await inspector.workers(engine)
    running = [job_id for beat in beats for job_id in beat.running]

    gauges: dict[str, dict[str, float]] = {name: {} for name, _ in GAUGES}
    counters: dict[str, dict[str, float]] = {name: {} for name, _, _ in COUNTERS}
    histograms: dict[str, tuple[list[tuple[str, int]], float, int]] = {}
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
        gauges["engine_outbox_length"][queue] = sum(
            outbox_events(s.outbox_length, s.outbox_extra) for s in scrapes
        )
        for name, field, _ in COUNTERS:
            counters[name][queue] = counts[field]
        histograms[queue] = _summed([_histogram(s.stats) for s in scrapes])

    lines: list[str] = []
    for name, help_text in GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{queue="{_label(q)}"}} {_number(v)}' for q, v in gauges[name].items()]
    for name, _, help_text in COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines += [f'{name}{{queue="{_label(q)}"}} {_number(v)}' for q, v in counters[name].items()]
    name = "engine_job_duration_seconds"
    lines += [f"# HELP {name} Run time of job attempts, in seconds.", f"# TYPE {name} histogram"]
    for queue, (buckets, seconds, count) in histograms.items():
        q = _label(queue)
        lines += [f'{name}_bucket{{queue="{q}",le="{le}"}} {n}' for le, n in buckets]
        lines.append(f'{name}_sum{{queue="{q}"}} {_number(seconds)}')
        lines.append(f'{name}_count{{queue="{q}"}} {count}')
    lines += [
        "# HELP engine_workers_alive Workers that sent a heartbeat in the last 15 seconds.",
        "# TYPE engine_workers_alive gauge",
        f"engine_workers_alive {len(beats)}",
    ]
    return "\n".join(lines) + "\n"
