"""The history's retention duty: deletes old job rows once an hour, from one worker."""

from __future__ import annotations

from datetime import timedelta

import structlog

from engine.broker.gateway import Gateway
from engine.core.clock import SYSTEM_CLOCK, Clock, now_utc
from engine.history.store import JobLog

log = structlog.get_logger("engine.history")


class Pruner:
    """Deletes old job-log rows once an hour; a Redis lock makes one worker do it per hour.

    The cutoffs count back from ``clock``'s time (the engine's)."""

    INTERVAL_S = 3600.0

    def __init__(
        self,
        gateway: Gateway,
        joblog: JobLog,
        completed_older_than: timedelta,
        failed_older_than: timedelta | None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.gateway = gateway
        self.joblog = joblog
        self.completed_older_than = completed_older_than
        self.failed_older_than = failed_older_than
        self.clock = clock

    async def run_once(self) -> float:
        if self.joblog.connected and await self.gateway.claim_once(
            self.gateway.keys.prune_lock, int(self.INTERVAL_S)
        ):
            deleted = await self.joblog.prune(
                completed_older_than=self.completed_older_than,
                failed_older_than=self.failed_older_than,
                now=now_utc(self.clock),
            )
            if deleted:
                log.info("pruned old job history", rows=deleted)
        return self.INTERVAL_S
