"""The public entry point: :class:`Engine`, its connections and enqueueing (what it declares,
tasks, schedules and hooks, is :class:`~engine.client.registry.Registry`)."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio

from engine.broker.gateway import Gateway, Retention, check_redis_url
from engine.client import sync
from engine.client.cronctl import CronControl
from engine.client.dlq import DeadLetters
from engine.client.flowctl import FlowControl
from engine.client.handle import Job, Notifier
from engine.client.registry import Registry
from engine.client.tasks import Calls, NamedCall, Task, spec_from_announcement
from engine.core.backoff import Backoff
from engine.core.clock import SYSTEM_CLOCK, Clock
from engine.core.errors import ConfigurationError, UnknownTaskError
from engine.core.hooks import Hooks
from engine.core.model import json_encoder
from engine.core.partitions import Layout, check_queue_name
from engine.core.settings import DEFAULT_REDIS_URL, Setting, Settings
from engine.core.signals import Signals
from engine.core.taskdef import TaskAnnouncement
from engine.core.urls import cluster_flag, parse_cluster_flag
from engine.cron import Schedule
from engine.history import HistoryPage, JobLog, LogLine
from engine.producer import Options, TaskSpec, build_jobs, check_meta

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from engine.worker import Worker

R = TypeVar("R")
ENQUEUE_CHUNK = 1000
"""Jobs per script call of a bulk enqueue (one call runs atomically on one partition)."""


class Engine(Registry, FlowControl, CronControl):
    """A job engine bound to one Redis (and optionally one PostgreSQL) and a namespace.

    Guarantees: a job is delivered at least once; it is acknowledged only after its outcome
    is recorded atomically with the acknowledgement; every attempt runs under a finite
    timeout; failures retry with exponential backoff and then land in the dead-letter stream.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        database_url: str | None = None,
        namespace: str | None = None,
        *,
        default_timeout: float = 60.0,
        default_max_attempts: int = 5,
        default_backoff: Backoff | None = None,
        visibility_timeout: float = 30.0,
        result_ttl: float = 24 * 3600.0,
        failed_ttl: float | None = None,
        idempotency_ttl: float = 24 * 3600.0,
        max_payload_bytes: int = 1024 * 1024,
        connect_timeout: float = 5.0,
        cron_lease: float = 10.0,
        history_retention: float = 30 * 24 * 3600.0,
        failed_history_retention: float | None = None,
        clock: Clock | None = None,
        cluster: bool | None = None,
        testing: str | None = None,
    ) -> None:
        if testing not in (None, "inline"):
            raise ConfigurationError(f'testing must be None or "inline", not {testing!r}')
        self.testing = testing
        """"inline": enqueue runs each job at once in the caller's event loop, with no Redis
        (see engine.testing.inline); None: jobs go to Redis, for workers."""
        self.clock: Clock = clock or SYSTEM_CLOCK
        if not isinstance(self.clock, Clock):
            raise ConfigurationError(
                f"clock must be a Clock (engine.testing.SystemClock or FakeClock), not {clock!r}"
            )
        self.signals = Signals()
        url = check_redis_url(redis_url or os.environ.get("ENGINE_REDIS_URL") or DEFAULT_REDIS_URL)
        if cluster is None:  # the argument, else the URL's ?cluster=, else ENGINE_REDIS_CLUSTER
            cluster = cluster_flag(url)
        if cluster is None:
            cluster = parse_cluster_flag(os.environ.get("ENGINE_REDIS_CLUSTER"), "ENGINE_REDIS_CLUSTER")
        self.settings = Settings(
            redis_url=url,
            cluster=cluster,
            database_url=database_url or os.environ.get("ENGINE_DATABASE_URL") or None,
            namespace=namespace or os.environ.get("ENGINE_NAMESPACE") or "engine",
            default_timeout_s=default_timeout,
            default_max_attempts=default_max_attempts,
            default_backoff=default_backoff or Backoff(),
            visibility_timeout_s=visibility_timeout,
            result_ttl_s=result_ttl,
            failed_ttl_s=failed_ttl,
            idempotency_ttl_s=idempotency_ttl,
            max_payload_bytes=max_payload_bytes,
            connect_timeout_s=connect_timeout,
            cron_lease_s=cron_lease,
            history_retention_s=history_retention,
            failed_history_retention_s=failed_history_retention,
        )
        self.tasks: dict[str, Task[..., Any]] = {}
        self.schedules: dict[str, Schedule] = {}
        self._joblog: JobLog | None = None
        self._logged_queues: set[str] = set()
        self._gateway: Gateway | None = None
        self._notify: Notifier | None = None
        self._checked = False
        self._announced: dict[str, TaskAnnouncement] = {}
        self._twins = sync.Twins(self._make_twin, Engine.close)
        self._is_twin = False
        self.hooks = Hooks()
        """What runs around jobs: ``on_startup``/``on_shutdown`` and their ``state``,
        middleware, failure and enqueue hooks."""
        self.layout = Layout()
        """Which queues are partitioned (:meth:`queue`), and into how many."""
        self.limits = {}
        self._layout_checked = False

    def __repr__(self) -> str:
        return f"<Engine namespace={self.namespace!r} tasks={len(self.tasks)}>"

    # The options as attributes (``app.namespace``...): each reads the settings, and setting
    # one replaces the settings with a re-validated copy.
    redis_url = Setting[str]("redis_url")
    cluster = Setting["bool | None"]("cluster")
    database_url = Setting["str | None"]("database_url")
    namespace = Setting[str]("namespace")
    default_timeout = Setting[float]("default_timeout_s")
    default_max_attempts = Setting[int]("default_max_attempts")
    default_backoff = Setting[Backoff]("default_backoff")
    visibility_timeout = Setting[float]("visibility_timeout_s")
    idempotency_ttl = Setting[float]("idempotency_ttl_s")
    max_payload_bytes = Setting[int]("max_payload_bytes")
    connect_timeout = Setting[float]("connect_timeout_s")
    cron_lease = Setting[float]("cron_lease_s")
    history_retention = Setting[float]("history_retention_s")
    failed_history_retention = Setting["float | None"]("failed_history_retention_s")

    @property
    def retention(self) -> Retention:
        """How long finished jobs' hashes stay in Redis, as the scripts take it."""
        return self.settings.retention

    # -- connection -------------------------------------------------------------------------

    @property
    def gateway(self) -> Gateway:
        """The Redis gateway (created on first use; :meth:`ready` also checks the server)."""
        if self._gateway is None:
            self._gateway = Gateway(
                self.redis_url,
                self.namespace,
                connect_timeout=self.connect_timeout,
                clock=self.clock,
                cluster=self.settings.cluster,
                lease_ms=round(self.settings.visibility_timeout_s * 1000),
            )
        return self._gateway

    @property
    def notifier(self) -> Notifier:
        """The one pub/sub connection that wakes ``job.result()`` callers."""
        if self._notify is None:
            self._notify = Notifier(self.gateway)
        return self._notify

    async def connect(self) -> None:
        """Connect and check the server answers (raises ConnectionFailed naming the URL)."""
        if self.testing == "inline":
            return  # no server: `async with app:` in a lifespan works in tests too
        await self.gateway.ping()
        self._checked = True

    def job_log(self) -> JobLog:
        """The PostgreSQL job log (needs ``database_url`` or ENGINE_DATABASE_URL)."""
        if self.database_url is None:
            raise ConfigurationError(
                "the job log needs a PostgreSQL URL: pass Engine(database_url=...) or set ENGINE_DATABASE_URL"
            )
        if self._joblog is None:
            self._joblog = JobLog(self.database_url, connect_timeout=self.connect_timeout)
        return self._joblog

    async def _job_log_ready(self) -> JobLog:
        joblog = self.job_log()
        if not joblog.connected:
            await joblog.connect()
        return joblog

    async def migrate(self) -> int:
        """Create or upgrade the job-log tables (idempotent); returns the schema version."""
        return await (await self._job_log_ready()).migrate()

    async def history(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        task: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        search: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> HistoryPage:
        """Jobs from the PostgreSQL history, newest first, filtered; page on with ``cursor``."""
        joblog = await self._job_log_ready()
        return await joblog.history(
            queue=queue,
            status=status,
            task=task,
            since=since,
            until=until,
            search=search,
            limit=limit,
            cursor=cursor,
        )

    async def job_logs(self, job_id: str) -> list[LogLine]:
        """A job's log rows from PostgreSQL (``ctx.log`` lines and failed attempts), oldest first."""
        return await (await self._job_log_ready()).logs(job_id)

    async def prune(
        self, *, completed_older_than: timedelta | None = None, failed_older_than: timedelta | None = None
    ) -> int:
        """Delete old history rows in batches: completed and cancelled jobs older than
        ``completed_older_than`` (default: ``history_retention``); failed jobs only when
        ``failed_older_than`` (or ``failed_history_retention``) is set."""
        if completed_older_than is None:
            completed_older_than = timedelta(seconds=self.history_retention)
        if failed_older_than is None and self.failed_history_retention is not None:
            failed_older_than = timedelta(seconds=self.failed_history_retention)
        joblog = await self._job_log_ready()
        return await joblog.prune(
            completed_older_than=completed_older_than, failed_older_than=failed_older_than
        )

    async def close(self) -> None:
        if self._joblog is not None:
            await self._joblog.close()
            self._joblog = None
        if self._notify is not None:
            await self._notify.close()
            self._notify = None
        if self._gateway is not None:
            await self._gateway.close()
            self._gateway = None
        self._checked = False

    async def __aenter__(self) -> Engine:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ready(self) -> Gateway:
        """The gateway, its server checked to answer once (ConnectionFailed otherwise), and
        the partitioned queues checked against what Redis records."""
        gateway = self.gateway
        if not self._checked:
            await gateway.ping()
            self._checked = True
        if not self._layout_checked:
            await self._check_layout(gateway)
            self._layout_checked = True
        return gateway

    async def _check_layout(self, gateway: Gateway) -> None:
        recorded: dict[str, int] = {}
        for queue, raw in (await gateway.recorded_partitions()).items():
            if raw.isdigit() and 1 <= int(raw) <= 256:
                recorded[queue] = int(raw)
        for queue, count in self.layout.declared.items():
            if queue not in recorded:
                if count > 1:
                    stats = await gateway.queue_stats(queue)
                    held = stats["waiting"] + stats["active"] + stats["delayed"]
                    if held:
                        raise ConfigurationError(
                            f"queue {queue!r} holds {held} job(s) as an unpartitioned queue; let a "
                            f"worker drain it before declaring it with partitions={count}"
                        )
                raw = await gateway.record_partitions(queue, count)
                recorded[queue] = int(raw) if raw.isdigit() else 0
            if recorded[queue] != count:
                raise ConfigurationError(
                    f"queue {queue!r} is declared with partitions={count} here, but Redis records "
                    f"{recorded[queue]} (namespace {self.namespace!r}): every producer and worker "
                    f"must declare the same count. To change it, drain the queue, then delete "
                    f"field {queue!r} of hash {gateway.keys.partitions!r}"
                )
        self.layout.learn(recorded)

    # -- producing --------------------------------------------------------------------------

    async def _enqueue(self, spec: TaskSpec, calls: Calls, options: Options) -> list[Job[Any]]:
        if self.hooks.enqueue:
            meta = dict(check_meta(options.meta) or {})
            for hook in self.hooks.enqueue:
                hook(spec.name, meta)
            options = replace(options, meta=meta or None)
        if self.testing == "inline":  # run the jobs here and now, in memory
            from engine.testing.inline import run_inline

            return await run_inline(self, spec, calls, options)
        queue, jobs = build_jobs(spec, calls, options, self.settings, now=self.clock.time())
        if not jobs:
            return []
        gateway = await self.ready()
        layout = self.layout
        if self.database_url is not None and queue not in self._logged_queues:
            # This app keeps a job log: make sure events are written from its first job on,
            # even before a worker (which switches it on too) has started.
            await gateway.switch_on_joblog(layout.partitions(queue))
            self._logged_queues.add(queue)
        if len(jobs) == 1:
            job = jobs[0]
            key = job.idempotency_key or options.job_id or options.partition_key or options.concurrency_key
            target = layout.route(queue, key)
            job_id, _added = await gateway.enqueue_one(target, job)
            return [Job(self, job_id, target, spec.shape)]
        if layout.count(queue) == 1 or (options.partition_key or options.concurrency_key) is not None:
            # One key's jobs on one partition: its limit (engine.core.flow) is not split.
            target = layout.route(queue, options.partition_key or options.concurrency_key)
            return [
                Job(self, job_id, target, spec.shape) for job_id, _ in await gateway.enqueue(target, jobs)
            ]
        # Round robin a chunk at a time: each chunk stays one script call on one partition.
        per_target: dict[str, list[int]] = {}
        for start in range(0, len(jobs), ENQUEUE_CHUNK):
            per_target.setdefault(layout.route(queue), []).extend(
                range(start, min(start + ENQUEUE_CHUNK, len(jobs)))
            )
        handles: list[Job[Any] | None] = [None] * len(jobs)

        async def send(target: str, indexes: list[int]) -> None:
            written = await gateway.enqueue(target, [jobs[i] for i in indexes], chunk=ENQUEUE_CHUNK)
            for i, (job_id, _) in zip(indexes, written, strict=True):
                handles[i] = Job(self, job_id, target, spec.shape)

        async with anyio.create_task_group() as group:
            for target, indexes in per_target.items():
                group.start_soon(send, target, indexes)
        return [h for h in handles if h is not None]

    async def enqueue(self, task_name: str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Enqueue by task name: a task of this app, or one a running worker announced."""
        return await self.with_options(task_name).enqueue(*args, **kwargs)

    # -- from sync code -----------------------------------------------------------------------

    def enqueue_sync(self, task_name: str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """:meth:`enqueue` from sync code (any thread with no running event loop)."""
        return self.with_options(task_name).enqueue_sync(*args, **kwargs)

    def sync_twin(self) -> Engine:
        """This app's twin on the background loop that serves sync callers
        (``engine.client.sync``): the same settings, tasks and layout, its own connections."""
        if self._is_twin:
            return self
        twin = cast(Engine, self._twins.get())
        twin.settings = self.settings  # an option set since (app.max_payload_bytes = ...) holds there too
        return twin

    def _make_twin(self) -> Engine:
        twin = copy.copy(self)  # shares settings, tasks, schedules, layout, clock, signals
        twin._is_twin = True
        twin._gateway = twin._notify = twin._joblog = None
        twin._checked = twin._layout_checked = False
        twin._logged_queues = set()
        return twin

    def _enqueue_sync(self, spec: TaskSpec, calls: Calls, options: Options) -> list[Job[Any]]:
        twin = self.sync_twin()
        return [self._adopt(job) for job in sync.call(lambda: twin._enqueue(spec, calls, options))]

    def _named_sync(
        self, task_name: str, options: Options, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Job[Any]:
        twin = self.sync_twin()
        call = NamedCall(twin.task_spec, twin._enqueue, task_name, options)
        return self._adopt(sync.call(lambda: call.enqueue(*args, **kwargs)))

    def _adopt(self, job: Job[R]) -> Job[R]:
        """A handle the twin made, bound to this app: awaited in async code it uses this app's
        connections, and its *_sync methods go back to the twin."""
        return job.rebound(self)

    def with_options(self, task_name: str, /, **options: Any) -> NamedCall:
        """Enqueue by task name with per-enqueue options, as ``task.with_options`` does:
        ``await app.with_options("export", delay=5).enqueue(42)``."""
        return NamedCall(
            self.task_spec, self._enqueue, task_name, Options().merged(**options), self._named_sync
        )

    async def task_spec(self, task_name: str) -> TaskSpec:
        """What a producer needs of a task: this app's, or one a running worker announced."""
        if not isinstance(task_name, str):
            raise TypeError(f"task name must be a string, not {type(task_name).__name__}")
        task = self.tasks.get(task_name)
        if task is not None:
            return task.spec
        gateway = await self.ready()
        raw = await gateway.announced_task(task_name)
        if raw is None:
            known = sorted(set(self.tasks) | set(await gateway.announced_task_names()))
            raise UnknownTaskError(
                f"unknown task {task_name!r} in namespace {self.namespace!r}: it is not registered "
                f"in this app and no worker has announced it (known tasks: {', '.join(known) or 'none'})"
            )
        return spec_from_announcement(task_name, raw, self.default_backoff)

    def job(self, job_id: str, queue: str | None = None) -> Job[Any]:
        """A handle on an existing job by id (its queue, or its partition of a partitioned
        queue, is looked up when needed)."""
        if not isinstance(job_id, str) or not job_id:
            raise ValueError("job id must be a non-empty string")
        if queue is not None and len(self.layout.partitions(check_queue_name(queue))) > 1:
            queue = None  # the id alone says which partition holds it
        return Job(self, job_id, queue)

    # -- state used by workers and tasks ----------------------------------------------------

    async def announce_tasks(self) -> None:
        gateway = await self.ready()
        mapping = {
            name: json_encoder.encode(TaskAnnouncement.of(t)).decode() for name, t in self.tasks.items()
        }
        await gateway.announce_tasks(mapping)

    # -- inspection -------------------------------------------------------------------------

    async def stats(self) -> dict[str, dict[str, int]]:
        """Per queue: waiting, active, delayed, completed, failed, dlq (plus retried,
        cancelled and enqueued counters)."""
        gateway = await self.ready()
        physical = set(await gateway.queues()) | set(self.layout.expand(t.queue for t in self.tasks.values()))
        every = await gateway.queues_stats(sorted(physical))
        out: dict[str, dict[str, int]] = {}
        for queue, partitions in sorted(self.layout.group(physical).items()):
            counts = [every[p] for p in partitions]
            out[queue] = {name: sum(c[name] for c in counts) for name in counts[0]}
            out[queue]["paused"] = max(c["paused"] for c in counts)
        return out

    async def partition_stats(self, queue: str) -> dict[str, dict[str, int]]:
        """:meth:`stats` of each partition of ``queue`` (one entry for a plain queue)."""
        gateway = await self.ready()
        return await gateway.queues_stats(self.layout.partitions(check_queue_name(queue)))

    def dlq(self, queue: str = "default") -> DeadLetters:
        """The dead-letter stream of ``queue``: list, replay, replay_all, purge."""
        return DeadLetters(self, check_queue_name(queue))

    def dashboard(self, **options: Any) -> ASGIApp:
        """The dashboard and JSON API as an ASGI app, to mount in a Starlette/FastAPI service
        (options: token=, basic_auth=, auth= (a callable reusing the host's authentication),
        read_only=, allowed_hosts=, metrics_token=, metrics_public=, csrf_secret=; see
        ``engine.dashboard.create_app``)."""
        from engine.dashboard import create_app

        return create_app(self, **options)

    def worker(
        self,
        queues: Sequence[str] | None = None,
        concurrency: int = 100,
        **options: Any,
    ) -> Worker:
        """A worker for ``queues`` (default: every queue this app's tasks use)."""
        if self.testing == "inline":
            raise ConfigurationError(
                'an app in inline mode (testing="inline") runs each job when it is enqueued: '
                "it has no worker (and its cron schedules never fire)"
            )
        from engine.worker import Worker

        return Worker(self, queues=queues, concurrency=concurrency, **options)
