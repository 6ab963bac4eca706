"""The job history in PostgreSQL: the only package that imports asyncpg.

Redis holds the live state of every job; the Lua script behind each state change also appends
an *event* to its queue's outbox stream. The shipper (``shipper``) reads those events in
batches (``batch``; ``superseded`` leaves out enqueues a newer event makes redundant)
through :class:`engine.broker.outbox.Outbox`, checks them (``events``: the wire format), and
the store (``store``) writes them as rows (``rows``) and serves the reads (``queries``);
``pruner`` is the retention duty. It imports ``engine.core`` and ``engine.broker`` below it,
nothing above.
"""

from engine.history.events import (
    EVENT_TYPES,
    LOG_LEVELS,
    STATUSES,
    Event,
    RawEvent,
    check_event,
    decode_entry,
    parse_event,
)
from engine.history.queries import HistoryJob, HistoryPage, LogLine
from engine.history.store import (
    SCHEMA_VERSION,
    TOMBSTONE_RETENTION,
    UNAVAILABLE,
    JobLog,
    is_data_error,
    schema_sql,
)

__all__ = [
    "EVENT_TYPES",
    "LOG_LEVELS",
    "SCHEMA_VERSION",
    "STATUSES",
    "TOMBSTONE_RETENTION",
    "UNAVAILABLE",
    "Event",
    "HistoryJob",
    "HistoryPage",
    "JobLog",
    "LogLine",
    "RawEvent",
    "check_event",
    "decode_entry",
    "is_data_error",
    "parse_event",
    "schema_sql",
]
