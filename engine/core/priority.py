"""Priorities: 0 runs first, 9 last, 5 by default (``with_options(priority=0)``,
``@app.task(priority=...)``).

A queue's jobs of one priority wait in a stream of their own, a *lane*, under the queue's
hash tag: priority 5 in the queue's stream as ever (a queue that never sees another priority
costs nothing more), any other in ``stream:<p>``. Everything else of the queue (job hashes,
delayed set, dead letters, stats, flow control) is shared. The lanes a queue uses are
recorded in a set beside it, which enqueue.lua adds to, and workers read every lane of a
queue in one start.lua call, lowest priority number first.

The policy is strict: a job starts only when no job of a lower number waits in its queue
(or partition). A sustained stream of priority-0 jobs the workers cannot keep up with
starves the rest; split such work into queues of its own when that must not happen.

Inside the worker and the gateway a lane is named ``queue!p`` (``!`` is refused in queue
names); :class:`engine.core.keys.QueueKeys` maps such a name to the lane's stream and the
queue's other keys.
"""

from __future__ import annotations

from engine.core.errors import ConfigurationError

DEFAULT_PRIORITY = 5
HIGHEST, LOWEST = 0, 9
LANE_SEPARATOR = "!"
NOTICE = "lanes"
"""Published on a queue's wake channel when it gets a lane it had none of."""


def check_priority(value: object, where: str = "priority") -> int:
    if type(value) is not int or not HIGHEST <= value <= LOWEST:
        raise ConfigurationError(
            f"{where} must be an integer from {HIGHEST} (runs first) to {LOWEST} (runs last), "
            f"not {value!r:.80}"
        )
    return value


def lane(queue: str, priority: int) -> str:
    """The name of ``queue``'s lane of ``priority`` (the queue itself for the default)."""
    return queue if priority == DEFAULT_PRIORITY else f"{queue}{LANE_SEPARATOR}{priority}"


def split_lane(name: str) -> tuple[str, int]:
    """(queue, priority) of a lane's name; a queue's own name is its default lane."""
    queue, sep, priority = name.partition(LANE_SEPARATOR)
    return (queue, int(priority)) if sep and priority.isdigit() else (queue, DEFAULT_PRIORITY)


def lane_queue(name: str) -> str:
    """The queue (or partition) a lane belongs to."""
    return name.partition(LANE_SEPARATOR)[0]


def lanes_in_order(queue: str, priorities: object) -> list[str]:
    """The lanes of ``queue`` worth reading, first to last: the default one and those of
    ``priorities`` (as read from the lanes set: anything not a priority is ignored)."""
    found = {DEFAULT_PRIORITY}
    for p in priorities if isinstance(priorities, set | list | tuple | frozenset) else ():
        text = p.decode() if isinstance(p, bytes) else str(p)
        if text.isdigit() and HIGHEST <= int(text) <= LOWEST:
            found.add(int(text))
    return [lane(queue, p) for p in sorted(found)]


def job_lane(queue: str, job: dict[str, str]) -> str:
    """The lane holding the entry of a job of ``queue``, from its hash (``pr``, set by
    enqueue.lua for a priority other than the default)."""
    pr, queue = job.get("pr", ""), lane_queue(queue)
    return lane(queue, int(pr)) if len(pr) == 1 and pr.isdigit() else queue
