"""ack.lua through operations.ack: committed outbox entries go, and the count of extra events."""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.broker.scripts import operations
from engine.core.keys import GROUP
from tests.scripts.support import Q, enqueue_call, job


async def test_acknowledged_entries_go_once_and_the_extra_count_follows(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    await gateway.switch_on_joblog([Q])
    await gateway.redis.xgroup_create(qk.outbox, GROUP, id="0", mkstream=True)
    await gateway.scripts.run(enqueue_call(gateway, [job("a"), job("b"), job("c")]))  # 1 entry, 2 extra
    await gateway.scripts.run(enqueue_call(gateway, [job("d")]))
    reply = await gateway.redis.xreadgroup(GROUP, "shipper", {qk.outbox: ">"}, count=10)
    (first, _), (second, _) = reply[0][1]
    assert await gateway.redis.get(qk.outbox_extra) == "2"
    call = operations.ack(outbox=qk.outbox, outbox_extra=qk.outbox_extra, group=GROUP, entries=[(first, 2)])
    assert await gateway.scripts.run(call) == 1
    assert await gateway.redis.xlen(qk.outbox) == 1
    assert await gateway.redis.exists(qk.outbox_extra) == 0  # 2 - 2: nothing extra left
    assert await gateway.scripts.run(call) == 0  # a retry takes nothing off twice
    last = operations.ack(outbox=qk.outbox, outbox_extra=qk.outbox_extra, group=GROUP, entries=[(second, 0)])
    assert await gateway.scripts.run(last) == 1
    assert await gateway.redis.xlen(qk.outbox) == 0
