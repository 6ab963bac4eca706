"""Pausing and resuming queues, and publishing their declared limits (engine.core.flow):
:class:`FlowControl`, a part of :class:`~engine.client.app.Engine`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from engine.core.errors import ConfigurationError
from engine.core.flow import Limits
from engine.core.partitions import Layout, base_queue, check_queue_name

if TYPE_CHECKING:
    from engine.broker.gateway import Gateway
    from engine.client.tasks import Task

log = structlog.get_logger("engine")


class FlowControl:
    """``app.pause(q)``, ``app.resume(q)``, ``app.is_paused(q)``, and the limits a worker
    publishes for its queues when it starts."""

    layout: Layout
    limits: dict[str, Limits]
    tasks: dict[str, Task[..., Any]]

    if TYPE_CHECKING:

        async def ready(self) -> Gateway: ...

    async def pause(self, queue: str) -> None:
        """Stop starting jobs of ``queue`` (every partition), on every worker, within a
        second: running jobs finish, enqueues, retries and delayed jobs still land and wait.
        Held in Redis: survives restarts of workers and of this process until :meth:`resume`."""
        await self._set_flow(queue, {"paused": "1"})

    async def resume(self, queue: str) -> None:
        """Start ``queue``'s jobs again (workers hear of it at once)."""
        await self._set_flow(queue, {"paused": ""})

    async def is_paused(self, queue: str) -> bool:
        gateway = await self.ready()
        partitions = await self._known_queue(gateway, queue)
        settings = await gateway.flow_settings(partitions)
        return any(s.get("paused") == "1" for s in settings.values())

    async def _set_flow(self, queue: str, fields: dict[str, str]) -> None:
        gateway = await self.ready()
        for partition in await self._known_queue(gateway, queue):
            await gateway.set_flow(partition, fields)

    async def _known_queue(self, gateway: Gateway, queue: str) -> tuple[str, ...]:
        """The partitions of a queue this app or Redis knows of; a clear error otherwise
        (a typo must not pause a queue nobody uses while the real one runs on)."""
        check_queue_name(queue)
        declared = {base_queue(t.queue) for t in self.tasks.values()} | set(self.layout.declared)
        declared |= set(self.limits)
        if queue not in declared:
            known = {base_queue(q) for q in await gateway.queues()}
            if queue not in known:
                names = ", ".join(sorted(declared | known)) or "none yet"
                raise ConfigurationError(
                    f"unknown queue {queue!r}: no task uses it and Redis has never seen it (known: {names})"
                )
        return self.layout.partitions(queue)

    async def publish_limits(self, queues: list[str]) -> None:
        """Write the limits this app declares for ``queues`` (names as declared, each
        partition getting its share) into Redis, where start.lua enforces them; a queue
        declared without limits has them removed. The worker started last wins: a change
        of limits is logged."""
        gateway = await self.ready()
        for queue in dict.fromkeys(base_queue(q) for q in queues):
            limits = self.limits.get(queue, Limits())
            partitions = self.layout.partitions(queue)
            for index, partition in enumerate(partitions):
                fields = limits.fields(index, len(partitions))
                before = await gateway.set_flow(partition, fields)
                named = ("rate", "concurrency", "key_concurrency")
                had = any(before[name] for name in named)
                changed = any(before[name] != fields[name] for name in named)
                if index == 0 and had and changed:
                    log.warning(
                        "queue limits changed",
                        queue=queue,
                        concurrency=limits.concurrency,
                        rate_limit=str(limits.rate) if limits.rate else None,
                        before_concurrency=before["concurrency"] or None,
                        before_rate_limit=before["rate"] or None,
                    )
