"""The PostgreSQL job history's store: the pool, migrations, batch writes, retention.

:meth:`JobLog.write` applies a batch of events in one transaction and is idempotent and
order-insensitive:

- a job row only moves forward: an event is applied when its version ``v`` is larger than the
  version stored (the row remembers the ``v`` of the event it reflects);
- facts that never change (payload, creation time, task name) are filled in whenever they
  arrive, so a job first seen through a late event (completed before enqueued) is created
  from what that event carries and completed by the enqueue event later;
- every log line and every failed attempt's error becomes one ``job_logs`` row keyed by its
  outbox entry id, so shipping an entry twice adds nothing;
- a ``deleted`` event (a job deleted, a dead-letter queue purged) deletes the job's rows and
  leaves a tombstone, so an event of the job from that outbox entry or an earlier one that
  arrives late (another shipper's, a dead shipper's reclaimed entries) writes nothing.

Reads (:meth:`JobLog.history`, :meth:`JobLog.job`, :meth:`JobLog.logs`, in
:mod:`engine.history.queries`) serve the dashboard; :meth:`JobLog.prune` is the retention
policy (failed jobs are kept unless asked).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from urllib.parse import urlsplit

import anyio
import asyncpg
import asyncpg.exceptions
import structlog

from engine.core.errors import ConfigurationError, ConnectionFailed
from engine.core.urls import mask_url
from engine.history import queries
from engine.history.events import Event
from engine.history.queries import HistoryJob, HistoryPage, LogLine
from engine.history.rows import INSERT_LOGS, UPSERT_JOBS, UPSERT_TOMBSTONES, Rows, outbox_position

log = structlog.get_logger("engine.history")

SCHEMA_VERSION = 1
"""Version of ``schema.sql``; :meth:`JobLog.migrate` records it in ``engine_schema_version``."""

_MIGRATE_LOCK = 0x656E67696E6501  # pg_advisory_xact_lock key: "engine" + 1
# Held shared by every write and exclusively by a write that deletes jobs (see JobLog.write).
_DELETE_LOCK = 0x656E67696E6502
# How long a deleted job's tombstone is kept: far longer than any event of it can wait in
# an outbox (a dead shipper's entries are taken over within about a visibility timeout).
TOMBSTONE_RETENTION = timedelta(days=7)


def schema_sql() -> str:
    """The text of ``engine/history/schema.sql`` (shipped inside the package)."""
    return resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")


# What a read of the history raises while PostgreSQL cannot be reached (the dashboard then
# shows the live state from Redis alone).
UNAVAILABLE = (ConnectionFailed, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def is_data_error(exc: BaseException) -> bool:
    """True when PostgreSQL (or asyncpg's encoder) refused the data itself, not the connection.

    Such a batch fails the same way every time; the shipper then writes it in halves to set
    the offending events aside instead of retrying it forever.
    """
    if isinstance(
        exc,
        asyncpg.exceptions.DataError
        | asyncpg.exceptions.IntegrityConstraintViolationError
        | asyncpg.exceptions.ProgramLimitExceededError,
    ):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


class JobLog:
    """The PostgreSQL job history: one asyncpg pool, shared by the shipper and the dashboard."""

    def __init__(
        self,
        database_url: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 5.0,
        command_timeout: float | None = 60.0,
        schema: str | None = None,
        migrate_on_connect: bool = False,
    ) -> None:
        self.migrate_on_connect = migrate_on_connect
        self.url = _check_database_url(database_url)
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ConfigurationError(
                f"invalid pool size min_size={min_size} max_size={max_size}: need 0 <= min_size <= max_size"
            )
        if connect_timeout <= 0:
            raise ConfigurationError("connect_timeout must be > 0 seconds")
        if schema is not None and (not schema or len(schema) > 63 or "\x00" in schema):
            raise ConfigurationError(f"invalid schema name {schema!r}")
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.schema = schema
        self._pool: asyncpg.Pool | None = None

    # -- lifetime ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the pool; raises ConnectionFailed (URL password masked) if the server is unreachable."""
        if self._pool is not None:
            return
        settings = {"application_name": "engine"}
        if self.schema is not None:
            settings["search_path"] = self.schema
        where = mask_url(self.url)
        try:
            with anyio.fail_after(self.connect_timeout):
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    timeout=self.connect_timeout,
                    command_timeout=self.command_timeout,
                    server_settings=settings,
                )
        except TimeoutError:
            raise ConnectionFailed(
                f"cannot reach PostgreSQL at {where}: no answer within {self.connect_timeout:g}s"
            ) from None
        except (asyncpg.exceptions.ClientConfigurationError, ValueError) as exc:
            raise ConfigurationError(f"invalid PostgreSQL URL {where!r}: {self._scrub(exc)}") from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConnectionFailed(f"cannot reach PostgreSQL at {where}: {self._scrub(exc)}") from None
        if self.migrate_on_connect:
            # Workers bring the schema up to date themselves: zero set-up, and idempotent.
            await self.migrate()

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        password = urlsplit(self.url).password
        return text.replace(password, "***") if password else text

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> JobLog:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._pool is not None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("JobLog is not connected: await joblog.connect() first")
        return self._pool

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn:
            yield conn

    async def migrate(self) -> int:
        """Apply ``schema.sql`` (idempotent, serialised by an advisory lock); the schema version."""
        sql = schema_sql()
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO engine_schema_version (version) VALUES ($1) ON CONFLICT (version) DO NOTHING",
                SCHEMA_VERSION,
            )
            version: int = await conn.fetchval("SELECT max(version) FROM engine_schema_version")
        return version

    # -- writes -----------------------------------------------------------------------------

    async def write(self, events: Sequence[Event]) -> None:
        """Apply a batch of events in one transaction (idempotent, order-insensitive).

        A ``deleted`` event deletes the job's rows (its log lines go with them) and records
        a tombstone with the event's outbox position; events of the job from the same entry
        or an earlier one are dropped, in this batch and in any later one. Shippers work on
        an outbox side by side, so such an event may well be written after the deletion.
        A write holds a lock shared by all writes, and one that deletes holds it alone: so a
        write that started before a deletion commits before it (and its rows are deleted),
        and one that starts after it sees its tombstones.
        """
        if not events:
            return
        deletions: dict[str, tuple[tuple[int, int], str]] = {}  # job id -> (position, queue)
        rest: list[Event] = []
        for ev in events:
            if ev.type != "deleted":
                rest.append(ev)
                continue
            position = outbox_position(ev.entry_id)
            seen = deletions.get(ev.job_id)
            if seen is None or position > seen[0]:
                deletions[ev.job_id] = (position, ev.queue)
        async with self._conn() as conn, conn.transaction():
            if deletions:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _DELETE_LOCK)
                ids = sorted(deletions)
                await conn.execute(
                    UPSERT_TOMBSTONES,
                    ids,
                    [deletions[i][1] for i in ids],
                    [deletions[i][0][0] for i in ids],
                    [deletions[i][0][1] for i in ids],
                )
                # Before the events of this batch: one from after the deletion makes a new row.
                await conn.execute("DELETE FROM jobs WHERE id = ANY($1::text[])", ids)
            else:
                await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", _DELETE_LOCK)
            if not rest:
                return
            tombstones = await conn.fetch(
                "SELECT id, entry_ms, entry_seq FROM deleted_jobs WHERE id = ANY($1::text[])",
                list({ev.job_id for ev in rest}),
            )
            if tombstones:
                deleted_at = {r["id"]: (r["entry_ms"], r["entry_seq"]) for r in tombstones}
                rest = [
                    ev
                    for ev in rest
                    if ev.job_id not in deleted_at or outbox_position(ev.entry_id) > deleted_at[ev.job_id]
                ]
            rows = Rows(rest)
            if rows.jobs[0]:
                await conn.execute(UPSERT_JOBS, *rows.jobs)
            if rows.logs[0]:
                await conn.execute(INSERT_LOGS, *rows.logs)

    # -- reads (engine.history.queries) -------------------------------------------------

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
        """Jobs newest first (by creation time), filtered; ``next_cursor`` pages on.

        ``since`` is inclusive, ``until`` exclusive (both timezone-aware). ``search`` matches
        a substring (case-insensitive) of the job id, task name, error or payload.
        """
        async with self._conn() as conn:
            return await queries.history(
                conn,
                queue=queue,
                status=status,
                task=task,
                since=since,
                until=until,
                search=search,
                limit=limit,
                cursor=cursor,
            )

    async def job(self, job_id: str) -> HistoryJob | None:
        async with self._conn() as conn:
            return await queries.job(conn, job_id)

    async def logs(self, job_id: str, limit: int = 1000) -> list[LogLine]:
        """A job's log lines (its own and one error line per failed attempt), oldest first."""
        async with self._conn() as conn:
            return await queries.logs(conn, job_id, limit)

    # -- retention --------------------------------------------------------------------------

    async def prune(
        self,
        *,
        completed_older_than: timedelta,
        failed_older_than: timedelta | None = None,
        batch: int = 5000,
        now: datetime | None = None,
    ) -> int:
        """Delete finished jobs (and their logs) older than the cutoffs; the number of jobs deleted.

        Completed and cancelled jobs go after ``completed_older_than``; failed jobs are kept
        unless ``failed_older_than`` is given. Tombstones of deleted jobs go after
        ``TOMBSTONE_RETENTION``. Deletes ``batch`` rows per statement, each its
        own transaction, so the table is never locked for long. The cutoffs count back
        from ``now`` (timezone-aware; the current time by default, the engine's clock's
        when the pruner calls).
        """
        for name, value in (
            ("completed_older_than", completed_older_than),
            ("failed_older_than", failed_older_than),
        ):
            if value is not None and (not isinstance(value, timedelta) or value < timedelta(0)):
                raise ValueError(f"{name} must be a non-negative timedelta, not {value!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, not {batch!r}")
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None:
            raise ValueError("now must be timezone-aware (e.g. datetime.now(UTC))")
        plan: list[tuple[list[str], datetime]] = [(["completed", "cancelled"], now - completed_older_than)]
        if failed_older_than is not None:
            plan.append((["failed"], now - failed_older_than))
        async with self._conn() as conn:
            queues = [row["name"] for row in await conn.fetch(_QUEUES)]
        total = 0
        for queue in queues:
            for statuses, cutoff in plan:
                while True:
                    async with self._conn() as conn:
                        reply = await conn.execute(_PRUNE, queue, statuses, cutoff, batch)
                    deleted = int(reply.rsplit(" ", 1)[-1])
                    total += deleted
                    if deleted < batch:
                        break
        while True:
            async with self._conn() as conn:
                reply = await conn.execute(
                    "DELETE FROM deleted_jobs WHERE id IN (SELECT id FROM deleted_jobs WHERE deleted_at < $1"
                    " LIMIT $2)",
                    now - TOMBSTONE_RETENTION,
                    batch,
                )
            if int(reply.rsplit(" ", 1)[-1]) < batch:
                break
        if total:
            log.info("pruned the job history", deleted=total)
        return total


# Retention walks jobs_queue_status_created_idx, queue by queue (a job finishes after it is
# created, so one finished before the cutoff was created before it too): an index of its own
# on (status, finished_at) cost every write of a row about a tenth of PostgreSQL's time.
# The queues, from the same index, one descent each (PostgreSQL 15 has no skip scan).
_QUEUES = """
WITH RECURSIVE queues(name) AS (
    SELECT min(queue_name) FROM jobs
    UNION ALL
    SELECT (SELECT min(queue_name) FROM jobs WHERE queue_name > queues.name) FROM queues
    WHERE queues.name IS NOT NULL
)
SELECT name FROM queues WHERE name IS NOT NULL
"""
# A batch's ids as an array: the delete then looks each up by the primary key (as IN (SELECT
# ...), it hashed them and read the whole table for every batch).
_PRUNE = """
DELETE FROM jobs WHERE id = ANY(ARRAY(
    SELECT id FROM jobs WHERE queue_name = $1 AND status = ANY($2::text[]) AND created_at < $3
    AND finished_at < $3 LIMIT $4
))
"""


def _check_database_url(url: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("PostgreSQL URL is empty: pass database_url= or set ENGINE_DATABASE_URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ConfigurationError(f"invalid PostgreSQL URL {mask_url(url)!r}: {exc}") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"invalid PostgreSQL URL {mask_url(url)!r}: it must start with postgresql:// "
            "(for example postgresql://user:password@localhost:5432/app)"
        )
    return url
