"""reclaim.lua through bindings.reclaim: idle entries taken over, with their delivery count."""

from __future__ import annotations

from engine.broker.gateway import DELIVERIES, Gateway
from engine.broker.scripts import bindings
from engine.broker.scripts.bindings import Reclaimed
from engine.broker.scripts.runner import Call
from tests.scripts.support import Q, active, pending_to


def reclaim_call(gateway: Gateway, consumer: str, min_idle_ms: int, count: int = 10) -> Call[list[Reclaimed]]:
    qk = gateway.keys.queue(Q)
    return bindings.reclaim(
        stream=qk.stream, stats=qk.stats, consumer=consumer, min_idle_ms=min_idle_ms, count=count
    )


async def test_idle_entries_move_to_the_claimer(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    (row,) = await active(gateway, "a")
    assert await gateway.scripts.run(reclaim_call(gateway, "w2", 3_600_000)) == []  # not idle that long
    assert await gateway.scripts.run(reclaim_call(gateway, "w2", 0)) == [Reclaimed(row.entry_id, "a", 2)]
    assert await pending_to(gateway) == {row.entry_id: "w2"}
    assert await gateway.redis.hget(qk.stats, "reclaimed") == "1"


async def test_an_entry_without_a_job_id_is_reclaimed_with_an_empty_one(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.ensure_group(Q)
    entry_id = await gateway.redis.xadd(qk.stream, {"x": "1"})
    await gateway.read([Q], "w1", 10, None)
    assert await gateway.scripts.run(reclaim_call(gateway, "w2", 0)) == [Reclaimed(entry_id, "", 2)]


async def test_the_gateway_reports_deliveries_as_read_does(gateway: Gateway) -> None:
    (row,) = await active(gateway, "a")
    assert await gateway.reclaim(Q, "w2", 0, 10) == [(Q, row.entry_id, {"j": "a", DELIVERIES: "2"})]
