"""The history's retention duty: deletes old job rows once an hour, from one worker."""

from __future__ import annotations

from datetime import timedelta

import structlog

from engine.broker.gateway import Gateway
from engine.history.store import JobLog

log = structlog.get_logger("engine.history")


class Pruner:
    """Deletes old job-log rows once an hour; a Redis lock makes one worker do it per hour."""

    INTERVAL_S = 3600.0

    def __init__(
        self,
        gateway: Gateway,
        joblog: JobLog,
        completed_older_than: timedelta,
        failed_older_than: timedelta | None,
    ) -> None:
        self.gateway = gateway
        self.joblog = joblog
        self.completed_older_than = completed_older_than
        self.failed_older_than = failed_older_than

    async def run_once(self) -> float:
        if self.joblog.connected and await self.gateway.claim_once(
            self.gateway.keys.prune_lock, int(self.INTERVAL_S)
        ):
            deleted = await self.joblog.prune(
                completed_older_than=self.completed_older_than, failed_older_than=self.failed_older_than
            )
            if deleted:
                log.info("pruned old job history", rows=deleted)
        return self.INTERVAL_S
