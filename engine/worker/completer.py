"""Recording outcomes: batches to ``finish``, a failing batch split apart, the unrecordable buried."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from engine.broker import RedisError
from engine.broker.gateway import Gateway
from engine.core.backoff import reconnect_delay
from engine.core.clock import Clock
from engine.core.transitions import Outcome, Retention
from engine.worker.executor import describe

log = structlog.get_logger("engine.worker")

# Outcomes recorded per script call; bounds how long one call holds Redis.
COMMIT_BATCH = 500


class Completer:
    """Records the runners' outcomes in batches: one script per queue, acknowledging each
    entry atomically with its outcome (at-least-once: nothing is acknowledged before that)."""

    def __init__(
        self,
        gateway: Gateway,
        worker_id: str,
        retention: Retention,
        inflight: dict[str, set[str]],
        grace_period_s: float,
        stopping: Callable[[], bool],
        clock: Clock,
        on_recorded: Callable[[int], object] | None = None,
        on_finished: Callable[[set[str]], object] | None = None,
    ) -> None:
        self.gateway = gateway
        self.retention = retention
        self.inflight = inflight
        self.grace_period_s = grace_period_s
        self.stopping = stopping
        self.clock = clock
        self.processed = 0
        self.on_recorded = on_recorded  # the total after each batch: max_jobs stops a worker here
        self.on_finished = on_finished  # the queues of each batch recorded: slots they gave back
        self._log = log.bind(worker=worker_id)

    async def run(self, receive: MemoryObjectReceiveStream[Outcome]) -> None:
        """Record what arrives until the runners' streams are all closed."""
        async with receive:
            while True:
                try:
                    batch = [await receive.receive()]
                except anyio.EndOfStream:
                    return
                while len(batch) < COMMIT_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self.commit(batch)

    async def commit(self, batch: list[Outcome]) -> None:
        failures = 0
        give_up_at: float | None = None
        while True:
            try:
                await self.gateway.finish(batch, self.retention)
                break
            except (RedisError, OSError) as exc:
                # Safe to repeat: an outcome whose entry was already acknowledged is ignored.
                failures += 1
                if self.stopping():
                    now = self.clock.monotonic()
                    give_up_at = give_up_at or now + self.grace_period_s
                    if now >= give_up_at:
                        self._log.error(
                            "could not record outcomes before shutdown; their jobs will be reclaimed",
                            jobs=len(batch),
                            error=str(exc),
                        )
                        return
                # Real time, not the engine's clock: it waits for a real server to come back.
                await anyio.sleep(reconnect_delay(failures))
            except Exception as exc:
                # Not Redis: the batch itself cannot be sent (a value no check foresaw).
                self._log.exception("could not record outcomes; recording them apart", jobs=len(batch))
                await self._record_apart(batch, exc)
                break
        inflight = self.inflight
        for outcome in batch:
            inflight[outcome.queue].discard(outcome.entry_id)
        if self.on_finished is not None:
            self.on_finished({outcome.queue for outcome in batch})
        self.processed += len(batch)
        if self.on_recorded is not None:
            self.on_recorded(self.processed)

    async def _record_apart(self, batch: Sequence[Outcome], error: Exception) -> None:
        """Record a batch that raised ``error`` in halves, down to the outcomes that cannot
        be recorded alone, which are buried: a bad outcome costs a few calls, not one per
        outcome of its batch."""
        if len(batch) == 1:
            (outcome,) = batch
            reason = f"could not record its outcome ({outcome.kind}): {describe(error)}"
            with contextlib.suppress(RedisError, OSError):
                await self.gateway.bury(outcome.queue, outcome.entry_id, outcome.job_id, reason)
            return
        half = len(batch) // 2
        for part in (batch[:half], batch[half:]):
            try:
                await self.gateway.finish(part, self.retention)
            except (RedisError, OSError):
                pass  # still pending: reclaimed and run again, as after a crash
            except Exception as exc:
                await self._record_apart(part, exc)
