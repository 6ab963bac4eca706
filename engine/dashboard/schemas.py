"""The JSON API's requests and responses as msgspec Structs: one source of truth.

The same types decode and validate what arrives and shape what the API answers
(:mod:`engine.dashboard.decoding`), and are what ``openapi.py`` turns into the OpenAPI
document (``msgspec.json.schema_components``), so the document cannot drift from what the
server does.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar, get_args

import structlog
from msgspec import UNSET, Meta, Struct, UnsetType

from engine.core.keys import _NAME as NAME_PATTERN
from engine.core.limits import MAX_ATTEMPTS, MAX_DELAY_S, MAX_KEY_LENGTH, MAX_TIMEOUT_S
from engine.core.model import LIVE_STATUSES, STATUSES, JobInfo, Status

log = structlog.get_logger("engine.dashboard")
T = TypeVar("T")

# --- the values a request names -----------------------------------------------------------

# The order the API documents and the pages offer: the live statuses first, as a queue's
# page lists them, then the finished ones.
STATUS_CHOICES: tuple[str, ...] = tuple(
    str(s) for s in (*LIVE_STATUSES, *(s for s in STATUSES if s not in LIVE_STATUSES))
)
MAX_LIMIT = 200
MAX_SEARCH = 200
MAX_BULK_IDS = 1000
MAX_BULK_JOBS = 10_000
"""Jobs one bulk retry/cancel/delete of a filtered selection may touch: past it the request
is refused whole (narrow the filter), so one click never changes a million jobs."""
BULK_SCAN_BUDGET = 200_000
"""Live entries one bulk request may examine to find its selection: a filter that matches
few jobs of a huge queue is refused rather than walking all of it."""
JOB_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_NAME_RULE = "1-100 letters, digits, '_', '.' or '-', starting with a letter or digit"

QueueName = Annotated[
    str,
    Meta(
        pattern=NAME_PATTERN.pattern, title="queue name", description=_NAME_RULE, extra={"rule": _NAME_RULE}
    ),
]
TaskName = Annotated[
    str,
    Meta(pattern=NAME_PATTERN.pattern, title="task name", description=_NAME_RULE, extra={"rule": _NAME_RULE}),
]
_JOB_ID_RULE = "1-200 letters, digits, '_', '.', ':' or '-'"
JobId = Annotated[
    str, Meta(pattern=JOB_ID.pattern, title="job id", description=_JOB_ID_RULE, extra={"rule": _JOB_ID_RULE})
]
_SEARCH_RULE = f"at most {MAX_SEARCH} characters, no NUL"
SearchText = Annotated[
    str,
    Meta(
        max_length=MAX_SEARCH,
        pattern=r"^[^\x00]*$",
        title="search text",
        description="case-insensitive text in the job id, task name, error or payload",
        extra={"rule": _SEARCH_RULE},
    ),
]
# "all" is what the pages send for "every status": the same as leaving it out.
StatusFilter = Literal["waiting", "active", "delayed", "failed", "completed", "cancelled", "all"]
assert set(get_args(StatusFilter)) == {*STATUS_CHOICES, "all"}, "StatusFilter must list every status"
Limit = Annotated[int, Meta(ge=1, le=MAX_LIMIT, description="page size")]
Minutes = Annotated[int, Meta(ge=1, le=120, description="the throughput window in minutes")]
Cursor = Annotated[str, Meta(description="the next_cursor of the previous page")]
Seconds = Annotated[float, Meta(description="seconds")]
UTCTime = Annotated[datetime, Meta(tz=True)]

# --- query strings ----------------------------------------------------------------------------


class QueueQuery(Struct, kw_only=True):
    """``GET /api/queues/{queue}``."""

    minutes: Minutes = 60


class ThroughputQuery(Struct, kw_only=True):
    """``GET /api/throughput``."""

    queue: Annotated[QueueName, Meta(description="one queue (default: all of them)")] | None = None
    minutes: Minutes = 60


class JobsQuery(Struct, kw_only=True):
    """``GET /api/jobs``."""

    queue: Annotated[QueueName, Meta(description="only this queue's jobs")] | None = None
    status: Annotated[StatusFilter, Meta(title="status", description="one status (default: all)")] | None = (
        None
    )
    task: Annotated[TaskName, Meta(description="only this task's jobs")] | None = None
    search: SearchText | None = None
    q: Annotated[SearchText, Meta(description="an alias of search")] | None = None
    limit: Limit = 50
    cursor: Cursor | None = None


class DeadLettersQuery(Struct, kw_only=True):
    """``GET /api/queues/{queue}/dlq``."""

    task: Annotated[TaskName, Meta(description="only this task's dead letters")] | None = None
    search: SearchText | None = None
    limit: Limit = 50
    cursor: Cursor | None = None


ScheduleName = Annotated[
    str,
    Meta(
        pattern=NAME_PATTERN.pattern,
        title="schedule name",
        description=_NAME_RULE,
        extra={"rule": _NAME_RULE},
    ),
]
CRON_RUNS_SHOWN = 20


class CronRunsQuery(Struct, kw_only=True):
    """``GET /api/cron/{schedule}``."""

    limit: Annotated[int, Meta(ge=1, le=CRON_RUNS_SHOWN, description="recent runs to list")] = 10


class ErrorsQuery(Struct, kw_only=True):
    """``GET /api/queues/{queue}/errors``."""

    task: Annotated[TaskName, Meta(description="only this task's failures")] | None = None


# --- request bodies ---------------------------------------------------------------------------


class EnqueueRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """A job to enqueue: the task by name, its arguments (checked against its signature)
    and per-job options."""

    task: Annotated[TaskName, Meta(description="the name of a registered task")]
    args: Annotated[list[Any], Meta(description="the task's positional arguments")] = []
    kwargs: Annotated[dict[str, Any], Meta(description="the task's keyword arguments")] = {}
    delay: (
        Annotated[float, Meta(ge=0, le=MAX_DELAY_S, description="seconds before the job is due")] | None
    ) = None
    queue: Annotated[QueueName, Meta(description="the queue, if not the task's")] | None = None
    idempotency_key: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=MAX_KEY_LENGTH,
                description="a second enqueue with the same key returns the first job",
            ),
        ]
        | None
    ) = None
    max_attempts: (
        Annotated[int, Meta(ge=1, le=MAX_ATTEMPTS, description="attempts before the job is dead-lettered")]
        | None
    ) = None
    timeout: (
        Annotated[float, Meta(gt=0, le=MAX_TIMEOUT_S, description="the execution timeout in seconds")] | None
    ) = None


class ReplayRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """The dead letters to replay: the given ids, or all (those matching task and search
    when given). Every id is checked before anything is replayed."""

    ids: (
        Annotated[
            list[JobId],
            Meta(min_length=1, max_length=MAX_BULK_IDS, description="the dead letters to replay"),
        ]
        | None
    ) = None
    all: Annotated[bool, Meta(description="replay every dead letter that matches task and search")] = False
    task: Annotated[TaskName, Meta(description="with all: only this task's")] | None = None
    search: Annotated[SearchText, Meta(description="with all: only those containing this text")] | None = None


class PurgeRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """The dead letters to delete: every one, or those matching task and search."""

    task: Annotated[TaskName, Meta(description="only this task's")] | None = None
    search: Annotated[SearchText, Meta(description="only those containing this text")] | None = None


BulkStatus = Literal["waiting", "active", "delayed", "failed"]


class BulkRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """A filtered selection of a queue's live jobs for a bulk retry, cancel or delete: every
    job the action applies to (retry: failed; cancel: waiting, delayed, active; delete:
    waiting, delayed, failed) that matches status, task and search. At most
    ``MAX_BULK_JOBS`` (10,000) per request: a bigger selection is refused, nothing done."""

    status: Annotated[BulkStatus, Meta(description="only jobs in this status")] | None = None
    task: Annotated[TaskName, Meta(description="only this task's jobs")] | None = None
    search: Annotated[SearchText, Meta(description="only jobs containing this text")] | None = None
    dry_run: Annotated[bool, Meta(description="count the selection, change nothing")] = False


# --- responses --------------------------------------------------------------------------------


class Error(Struct, kw_only=True):
    """Every 4xx and 5xx answer of the API: what went wrong and what to do about it."""

    error: str
    status: int


class Csrf(Struct, kw_only=True):
    """The CSRF token (also set as the engine_csrf cookie) and the header to send it in."""

    csrf_token: str
    header: Literal["X-CSRF-Token"]


class Counts(Struct, kw_only=True, forbid_unknown_fields=True):
    waiting: int
    active: int
    delayed: int
    completed: int
    failed: int
    dlq: int
    retried: int
    cancelled: int
    enqueued: int
    reclaimed: int
    replayed: int
    paused: Annotated[int, Meta(ge=0, le=1, description="1 while the queue is paused")]
    concurrency: Annotated[int, Meta(ge=0, description="queue-wide concurrency limit (0: none)")]
    running: Annotated[int, Meta(ge=0, description="concurrency slots held by running jobs")]
    throttled: Annotated[
        int, Meta(ge=0, description="waiting jobs flow control (pause, concurrency, rate) holds back now")
    ]


class Partition(Counts, kw_only=True, forbid_unknown_fields=True):
    """One partition of a partitioned queue."""

    name: str


class Queue(Counts, kw_only=True, forbid_unknown_fields=True):
    """A queue's counts (summed over its partitions) and lag."""

    name: str
    lag_seconds: Annotated[float, Meta(description="age of the oldest waiting job, in seconds")]


class Minute(Struct, kw_only=True, forbid_unknown_fields=True):
    """Jobs finished in one minute."""

    minute: UTCTime
    completed: int
    failed: int
    failure_rate: Annotated[float, Meta(ge=0, le=1)]


class QueueDetail(Queue, kw_only=True, forbid_unknown_fields=True):
    """One queue: counts, lag, throughput per minute, and its partitions' counts when it is
    partitioned."""

    throughput: list[Minute]
    rate_limit: Annotated[str | None, Meta(description='its rate limit ("100/s"), if any')] = None
    key_concurrency: Annotated[
        int | None, Meta(description="jobs of one concurrency key at once, if limited")
    ] = None
    partitions: list[Partition] | UnsetType = UNSET


class QueueFlow(Struct, kw_only=True, forbid_unknown_fields=True):
    """A queue paused or resumed: every worker holds back (or starts again) within a second."""

    queue: str
    paused: bool


class QueueList(Struct, kw_only=True, forbid_unknown_fields=True):
    queues: list[Queue]


class Throughput(Struct, kw_only=True, forbid_unknown_fields=True):
    """Completed and failed jobs per minute, summed over ``queues``."""

    queues: list[str]
    minutes: list[Minute]


class Totals(Struct, kw_only=True, forbid_unknown_fields=True):
    waiting: int
    active: int
    delayed: int
    completed: int
    failed: int
    dlq: int


class Worker(Struct, kw_only=True, forbid_unknown_fields=True):
    """A live worker, from its last heartbeat."""

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    busy: int
    processed: int
    running: Annotated[list[str], Meta(description="ids of the jobs it runs")]
    started_at: UTCTime
    seen_at: UTCTime
    seen_seconds_ago: float


class WorkerList(Struct, kw_only=True, forbid_unknown_fields=True):
    workers: list[Worker]


class Overview(Struct, kw_only=True, forbid_unknown_fields=True):
    queues: list[Queue]
    totals: Totals
    throughput: list[Minute]
    workers: list[Worker]
    history: Annotated[bool, Meta(description="whether the PostgreSQL job log is on")]


class Job(JobInfo, kw_only=True, forbid_unknown_fields=True):
    """A job as the API lists it: engine.core.model.JobInfo, and where it came from."""

    source: Literal["redis", "history"]


class JobList(Struct, kw_only=True, forbid_unknown_fields=True):
    """A page of jobs."""

    jobs: list[Job]
    next_cursor: Annotated[str, Meta(description="pass as cursor for the next page")] | None
    source: Literal["redis", "history"]
    notice: Annotated[str, Meta(description="why some jobs may be missing")] | None
    scanned: Annotated[int, Meta(description="live entries examined (searches without the job log)")]


class DeadLetterList(JobList, kw_only=True, forbid_unknown_fields=True):
    """A page of a queue's dead letters, and how many it holds."""

    count: int


class LogLine(Struct, kw_only=True, forbid_unknown_fields=True):
    at: UTCTime | None
    level: str
    message: str


class TimelineStep(Struct, kw_only=True, forbid_unknown_fields=True):
    at: UTCTime
    label: str
    kind: Status


class JobActions(Struct, kw_only=True, forbid_unknown_fields=True):
    """What the job allows now."""

    retry: bool
    cancel: bool
    delete: bool


class JobDetail(Job, kw_only=True, forbid_unknown_fields=True):
    """A job in full: its fields, log lines, timeline and the actions it allows."""

    replayed_at: UTCTime | None
    logs: list[LogLine]
    timeline: list[TimelineStep]
    actions: JobActions


class JobLogs(Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    logs: list[LogLine]


class Enqueued(Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    task: str
    queue: str
    partition: Annotated[str, Meta(description="the partition of a partitioned queue it went to")] | None
    status: Literal["waiting", "delayed"]


class Retried(Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    queue: str
    status: Literal["waiting"]


class Cancelled(Struct, kw_only=True, forbid_unknown_fields=True):
    """A waiting or delayed job is cancelled at once; a running one is told to stop."""

    id: str
    queue: str
    status: Literal["cancelling", "cancelled"]


class Deleted(Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    deleted: Literal[True]


class Skipped(Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    reason: Literal["not failed", "its data is gone"]


class Replayed(Struct, kw_only=True, forbid_unknown_fields=True):
    """How many were replayed; with ids given, which ones and why the others were not."""

    replayed: int
    ids: list[str] | UnsetType = UNSET
    skipped: list[Skipped] | UnsetType = UNSET


class Purged(Struct, kw_only=True, forbid_unknown_fields=True):
    purged: int


class BulkResult(Struct, kw_only=True, forbid_unknown_fields=True):
    """What a bulk action matched and did: ``done`` of ``matched`` (the others changed state
    meanwhile, or are running, for a delete); with dry_run, only ``matched``."""

    action: Literal["retry", "cancel", "delete"]
    queue: str
    matched: int
    done: int
    skipped: int
    dry_run: bool
    limit: Annotated[int, Meta(description="the most jobs one request may touch")]


class TaskFigures(Struct, kw_only=True, forbid_unknown_fields=True):
    """One task's outcomes in a queue since its counters began, and its run times."""

    task: str
    completed: int
    failed: int
    retried: int
    cancelled: int
    failure_rate: Annotated[float, Meta(ge=0, le=1, description="failed / (completed + failed)")]
    last_hour_completed: Annotated[int, Meta(description="completed in the last 60 minutes")]
    last_hour_failed: Annotated[int, Meta(description="failed for good in the last 60 minutes")]
    per_minute: Annotated[float, Meta(description="jobs finished per minute over the last 60 minutes")]
    attempts: Annotated[int, Meta(description="attempts timed (the duration histogram's count)")]
    mean_seconds: float | None
    p50_seconds: Annotated[float | None, Meta(description="median run time, estimated from buckets")]
    p95_seconds: Annotated[float | None, Meta(description="95th percentile, estimated from buckets")]


class TaskBreakdown(Struct, kw_only=True, forbid_unknown_fields=True):
    """A queue's figures per task, from its stats counters (partitions added up). The
    quantiles are estimates: interpolated within the duration histogram's buckets."""

    queue: str
    tasks: list[TaskFigures]
    estimated: Literal[True]
    bounds: Annotated[list[float], Meta(description="the histogram's bucket bounds (s)")]


class ErrorGroup(Struct, kw_only=True, forbid_unknown_fields=True):
    """Failed jobs sharing an error's first line."""

    error: Annotated[str, Meta(description="the error's first line (the exception and message)")]
    kind: Annotated[str, Meta(description="the exception class, or '' when the line names none")]
    count: int
    tasks: list[str]
    latest_id: Annotated[str, Meta(description="its newest dead letter (or failed job of the history)")]
    search: Annotated[str, Meta(description="search text that finds the group's jobs (maybe a few more)")]


class ErrorGroups(Struct, kw_only=True, forbid_unknown_fields=True):
    """A queue's failed jobs grouped by error, biggest group first: its dead letters, and
    with the job log on the failed jobs of its history too."""

    queue: str
    groups: list[ErrorGroup]
    scanned: Annotated[int, Meta(description="failed jobs read (the newest, up to a bound)")]
    complete: Annotated[bool, Meta(description="false when older failed jobs were not read")]
    source: Annotated[
        Literal["redis", "history"],
        Meta(description="redis: dead letters only; history: and the job log's failed jobs"),
    ]


class Schedule(Struct, kw_only=True, forbid_unknown_fields=True):
    """A cron schedule some worker announced."""

    name: str
    expr: str
    tz: str
    queue: str
    misfire: Annotated[str, Meta(description="latest, skip or all")]
    next_run: UTCTime | None
    last_run: UTCTime | None
    leader: Annotated[str, Meta(description="the scheduler that holds the queue's lease")] | None
    paused: Annotated[bool, Meta(description="its ticks are skipped until it is resumed")] = False
    paused_at: UTCTime | None = None


class CronList(Struct, kw_only=True, forbid_unknown_fields=True):
    schedules: list[Schedule]


class CronRun(Struct, kw_only=True, forbid_unknown_fields=True):
    """A job a schedule fired (or a tick it skipped while paused), newest first."""

    kind: Annotated[Literal["tick", "manual", "skipped"], Meta(description="manual: run now")]
    job_id: str | None
    tick: Annotated[UTCTime | None, Meta(description="the tick it was for (None: run now)")]
    at: UTCTime
    status: Annotated[str | None, Meta(description="the job's status now (None: gone)")]


class ScheduleDetail(Schedule, kw_only=True, forbid_unknown_fields=True):
    """A schedule and its recent runs."""

    runs: list[CronRun]


class ScheduleState(Struct, kw_only=True, forbid_unknown_fields=True):
    """A schedule paused or resumed: the leader skips (or fires again) from its next tick."""

    schedule: str
    paused: bool


class ScheduleRan(Struct, kw_only=True, forbid_unknown_fields=True):
    """A schedule's task enqueued now, outside its ticks (its next tick fires as planned)."""

    schedule: str
    id: str
    queue: str


class TaskInfo(Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    queue: str
    timeout: Seconds
    max_attempts: int
    signature: Annotated[str, Meta(description="what callers must match")] | None


class TaskList(Struct, kw_only=True, forbid_unknown_fields=True):
    tasks: list[TaskInfo]


class ApiIndex(Struct, kw_only=True, forbid_unknown_fields=True):
    openapi: Annotated[str, Meta(description="where the OpenAPI document is")]
    endpoints: list[str]


class Document(Struct, kw_only=True):
    """This OpenAPI 3.1 document."""

    openapi: Literal["3.1.0"]
    info: dict[str, Any]
    servers: list[dict[str, Any]]
    security: list[dict[str, list[str]]]
    paths: dict[str, dict[str, Any]]
    components: dict[str, Any]
