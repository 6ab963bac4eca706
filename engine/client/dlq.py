"""The dead-letter stream of a queue: list, replay and purge failed jobs.

A job lands here when it failed ``max_attempts`` times, raised ``UnrecoverableError``,
named an unknown task, could not be decoded, or kept killing its worker. Nothing here
deletes a failed job except :meth:`DeadLetters.purge` (or a ``failed_ttl`` the user set).
A partitioned queue has a dead-letter stream per partition: they are read as one, newest
first (entry ids are times), and a job is replayed in its own partition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.core.errors import JobNotFound, ScriptCode
from engine.core.model import JobInfo, Status, lenient_number, ms_to_datetime

if TYPE_CHECKING:
    from engine.broker.gateway import Gateway
    from engine.runtime import Runtime


class DeadLetters:
    def __init__(self, engine: Runtime, queue: str) -> None:
        self.engine = engine
        self.queue = queue

    def __repr__(self) -> str:
        return f"<DeadLetters queue={self.queue!r}>"

    async def _partitions(self) -> tuple[Gateway, tuple[str, ...]]:
        gateway = await self.engine.ready()
        return gateway, self.engine.layout.partitions(self.queue)

    async def count(self) -> int:
        gateway, partitions = await self._partitions()
        return sum([await gateway.dlq_count(p) for p in partitions])

    async def list(self, limit: int = 50, *, task: str | None = None) -> list[JobInfo]:
        """Dead-lettered jobs, newest first (``task=`` keeps only that task's)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an integer >= 1, not {limit!r}")
        gateway, partitions = await self._partitions()
        out: list[JobInfo] = []
        # Filtering by task happens after reading; read more than needed when filtering.
        entries: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        for partition in partitions:
            read = await gateway.dlq_entries(partition, count=None if task else limit)
            ids = [fields.get("j", "") for _, fields in read]
            hashes = await gateway.job_hashes(partition, [i or "-" for i in ids])
            entries += [
                (entry_id, partition, fields, h) for (entry_id, fields), h in zip(read, hashes, strict=True)
            ]
        if len(partitions) > 1:
            entries.sort(key=lambda e: _entry_order(e[0]), reverse=True)
        for entry_id, partition, fields, h in entries:
            job_id = fields.get("j", "")
            if h:
                info = JobInfo.from_hash(job_id, partition, h)
            else:
                # The job's data is gone (a poison entry, or failed_ttl expired it):
                # report what the dead letter itself recorded.
                info = JobInfo(
                    id=job_id or entry_id,
                    task=fields.get("task", ""),
                    queue=partition,
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
        gateway, partitions = await self._partitions()
        for partition in partitions:
            code = await gateway.replay(partition, job_id)
            if code is not ScriptCode.NO_SUCH_JOB:
                break
        if code is ScriptCode.NO_SUCH_JOB:
            raise JobNotFound(f"cannot replay job {job_id!r} of queue {self.queue!r}: its data is gone")
        return code is ScriptCode.DONE

    async def replay_all(
        self, filter: Callable[[JobInfo], bool] | None = None, *, task: str | None = None
    ) -> int:
        """Replay every dead letter matching ``filter`` (a predicate) and ``task``."""
        gateway = await self.engine.ready()
        total = await self.count()
        replayed = 0
        for info in await self.list(limit=max(1, total), task=task):
            if (
                info.task
                and (filter is None or filter(info))
                and await gateway.replay(info.partition or info.queue, info.id) is ScriptCode.DONE
            ):
                replayed += 1
        return replayed

    async def purge(self) -> int:
        """Delete every dead letter and its failed job's data (its job-log history too);
        returns how many."""
        gateway, partitions = await self._partitions()
        return sum([await gateway.purge_dlq(p) for p in partitions])


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0)) if ms.isdigit() and (seq or "0").isdigit() else (0, 0)
