"""The one read side: queues, live jobs, dead letters, workers and cron, for the CLI and the dashboard.

Nothing here changes state; the worker never depends on this package. Redis is reached only
through the gateway (``gateway.reads`` for the read-only queries), the time only through
``engine.clock``. It imports ``engine.core``, ``engine.broker`` and the
:class:`engine.runtime.Runtime` protocol, nothing above.

- ``cursors``: the one page-cursor codec.
- ``jobs``: one job's hash or dead letter, read leniently.
- ``scan``: the one walk over a queue's stream, delayed set and dead letters.
- ``queues``: queue names, lags and throughput.
- ``fleet``: live workers and cron schedules.
"""

from engine.inspector.cursors import InvalidCursor, decode_cursor, encode_cursor, is_cursor
from engine.inspector.fleet import ALIVE_WITHIN_S, CronRow, cron_schedules, workers
from engine.inspector.jobs import LiveJob, dead_info, live_info, live_job, read_info
from engine.inspector.queues import queue_lags, queue_names, task_throughput, throughput, throughput_totals
from engine.inspector.scan import SCAN_BUDGET, LivePage, dead_matching, everything, queue_jobs, scan_live

__all__ = [
    "ALIVE_WITHIN_S",
    "SCAN_BUDGET",
    "CronRow",
    "InvalidCursor",
    "LiveJob",
    "LivePage",
    "cron_schedules",
    "dead_info",
    "dead_matching",
    "decode_cursor",
    "encode_cursor",
    "everything",
    "is_cursor",
    "live_info",
    "live_job",
    "queue_jobs",
    "queue_lags",
    "queue_names",
    "read_info",
    "scan_live",
    "task_throughput",
    "throughput",
    "throughput_totals",
    "workers",
]
