"""Per-task figures from a queue's stats hash: counters, the duration histogram, quantiles.

``finish.lua`` keeps, beside the queue's own counters and ``d:<bound>`` buckets, the same
per task: ``t:<task>:<kind>`` and ``td:<task>:<bound>`` / ``td:<task>:sum_ms``. Some outcomes
are counted for the queue only (a waiting job cancelled, a poison message, anything from
before the per-task fields existed): :func:`remainder` is that part, so that the per-task
series of ``/metrics`` still add up to the queue's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
KINDS = ("completed", "failed", "retried", "cancelled")
"""The outcomes finish.lua counts per task."""
_LABELS = (*DURATION_BOUNDS, "+Inf")


@dataclass
class Figures:
    """Counters and the (non-cumulative) duration buckets of one task, or of a whole queue."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    buckets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_LABELS, 0))
    sum_ms: int = 0

    def add(self, other: Figures) -> None:
        for kind, n in other.counts.items():
            self.counts[kind] += n
        for label, n in other.buckets.items():
            self.buckets[label] += n
        self.sum_ms += other.sum_ms

    @property
    def observed(self) -> int:
        return sum(self.buckets.values())

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count) of the Prometheus histogram, +Inf last."""
        total = 0
        out = []
        for label in _LABELS:
            total += self.buckets[label]
            out.append((label, total))
        return out

    def quantile(self, q: float) -> float | None:
        """An estimate (seconds) of the q-quantile of the durations, interpolated linearly
        within its bucket as Prometheus's histogram_quantile does; None without any. Past the
        last finite bound the estimate is that bound: the histogram knows nothing above it."""
        total = self.observed
        if not total:
            return None
        rank = q * total
        below, lower = 0, 0.0
        for label in DURATION_BOUNDS:
            n = self.buckets[label]
            upper = float(label)
            if n and below + n >= rank:
                return lower + (upper - lower) * (rank - below) / n
            below += n
            lower = upper
        return float(DURATION_BOUNDS[-1])


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _apply(figures: Figures, rest: str, value: object) -> None:
    """One field of the hash without its ``t:``/``td:`` prefix and task: a kind or a bound."""
    if rest == "sum_ms":
        figures.sum_ms += _int(value)
    elif rest in figures.buckets:
        figures.buckets[rest] += _int(value)
    elif rest in figures.counts:
        figures.counts[rest] += _int(value)


def queue_figures(stats: Mapping[str, str]) -> Figures:
    """The queue-level counters and buckets of one stats hash."""
    figures = Figures()
    for kind in KINDS:
        figures.counts[kind] = _int(stats.get(kind, 0))
    for label in _LABELS:
        figures.buckets[label] = _int(stats.get(f"d:{label}", 0))
    figures.sum_ms = _int(stats.get("d:sum_ms", 0))
    return figures


def task_figures(stats: Mapping[str, str]) -> dict[str, Figures]:
    """Task name -> its figures, from one stats hash."""
    out: dict[str, Figures] = {}
    for name, value in stats.items():
        if name.startswith("t:"):
            prefix = "t:"
        elif name.startswith("td:"):
            prefix = "td:"
        else:
            continue
        # Task names hold no ':' today; split from the right so one that did still parses.
        task, sep, rest = name[len(prefix) :].rpartition(":")
        if sep and task:
            _apply(out.setdefault(task, Figures()), rest, value)
    return out


def summed(hashes: Iterable[Mapping[str, str]]) -> tuple[Figures, dict[str, Figures]]:
    """(queue figures, per-task figures) added up over several stats hashes (the partitions
    of one queue)."""
    queue = Figures()
    tasks: dict[str, Figures] = {}
    for stats in hashes:
        queue.add(queue_figures(stats))
        for task, figures in task_figures(stats).items():
            tasks.setdefault(task, Figures()).add(figures)
    return queue, tasks


def remainder(queue: Figures, tasks: Mapping[str, Figures]) -> Figures:
    """What the queue counted that no task did (never below zero)."""
    out = Figures()
    for kind in KINDS:
        out.counts[kind] = max(0, queue.counts[kind] - sum(t.counts[kind] for t in tasks.values()))
    for label in _LABELS:
        out.buckets[label] = max(0, queue.buckets[label] - sum(t.buckets[label] for t in tasks.values()))
    out.sum_ms = max(0, queue.sum_ms - sum(t.sum_ms for t in tasks.values()))
    return out
