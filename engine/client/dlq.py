"""The dead-letter stream of a queue: list, replay and purge failed jobs.

A job lands here when it failed ``max_attempts`` times, raised ``UnrecoverableError``,
named an unknown task, could not be decoded, or kept killing its worker. Nothing here
deletes a failed job except :meth:`DeadLetters.purge` (or a ``failed_ttl`` the user set).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.core.errors import JobNotFound, ScriptCode
from engine.core.model import JobInfo, Status, lenient_number, ms_to_datetime

if TYPE_CHECKING:
    from engine.runtime import Runtime


class DeadLetters:
    def __init__(self, engine: Runtime, queue: str) -> None:
        self.engine = engine
        self.queue = queue

    def __repr__(self) -> str:
        return f"<DeadLetters queue={self.queue!r}>"

    async def count(self) -> int:
        gateway = await self.engine.ready()
        return await gateway.dlq_count(self.queue)

    async def list(self, limit: int = 50, *, task: str | None = None) -> list[JobInfo]:
        """Dead-lettered jobs, newest first (``task=`` keeps only that task's)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an integer >= 1, not {limit!r}")
        gateway = await self.engine.ready()
        out: list[JobInfo] = []
        # Filtering by task happens after reading; read more than needed when filtering.
        entries = await gateway.dlq_entries(self.queue, count=None if task else limit)
        ids = [fields.get("j", "") for _, fields in entries]
        hashes = await gateway.job_hashes(self.queue, [i or "-" for i in ids])
        for (entry_id, fields), job_id, h in zip(entries, ids, hashes, strict=True):
            if h:
                info = JobInfo.from_hash(job_id, self.queue, h)
            else:
                # The job's data is gone (a poison entry, or failed_ttl expired it):
                # report what the dead letter itself recorded.
                info = JobInfo(
                    id=job_id or entry_id,
                    task=fields.get("task", ""),
                    queue=self.queue,
                    status=Status.FAILED,
                    attempts=lenient_number(fields.get("attempts"), int) or 0,
                    error=fields.get("error"),
                    traceback=fields.get("traceback") or None,
                    finished_at=ms_to_datetime(fields.get("at")),
                )
            if task is None or info.task == task:
                out.append(info)
                if len(out) >= limit:
                    break
        return out

    async def replay(self, job_id: str) -> bool:
        """Run a failed job again (attempts reset, same id). False if it is not failed.

        Raises :class:`JobNotFound` when its data is gone (purged, expired, or a poison
        entry that never had any).
        """
        gateway = await self.engine.ready()
        code = await gateway.replay(self.queue, job_id)
        if code is ScriptCode.NO_SUCH_JOB:
            raise JobNotFound(f"cannot replay job {job_id!r} of queue {self.queue!r}: its data is gone")
        return code is ScriptCode.DONE

    async def replay_all(
        self, filter: Callable[[JobInfo], bool] | None = None, *, task: str | None = None
    ) -> int:
        """Replay every dead letter matching ``filter`` (a predicate) and ``task``."""
        gateway = await self.engine.ready()
        total = await gateway.dlq_count(self.queue)
        replayed = 0
        for info in await self.list(limit=max(1, total), task=task):
            if (
                info.task
                and (filter is None or filter(info))
                and await gateway.replay(self.queue, info.id) is ScriptCode.DONE
            ):
                replayed += 1
        return replayed

    async def purge(self) -> int:
        """Delete every dead letter and its failed job's data (its job-log history too);
        returns how many."""
        gateway = await self.engine.ready()
        return await gateway.purge_dlq(self.queue)
