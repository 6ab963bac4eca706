"""renew.lua through bindings.renew: leases kept, lost ones reported, acknowledged ones skipped."""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.broker.scripts import bindings
from engine.core.keys import GROUP
from engine.core.transitions import Outcome
from tests.scripts.support import KEEP, WORKER, Q, active


async def idle_ms(gateway: Gateway, entry_id: str) -> int:
    (row,) = await gateway.redis.xpending_range(gateway.keys.queue(Q).stream, GROUP, entry_id, entry_id, 1)
    return int(row["time_since_delivered"])


async def test_held_entries_are_renewed_and_taken_ones_reported(gateway: Gateway) -> None:
    qk = gateway.keys.queue(Q)
    kept, taken, done = await active(gateway, "kept", "taken", "done")
    # Make every lease look old, then let another worker take one and finish another.
    await gateway.redis.xclaim(qk.stream, GROUP, WORKER, 0, [kept.entry_id], idle=10_000, justid=True)
    await gateway.redis.xclaim(qk.stream, GROUP, "w2", 0, [taken.entry_id], justid=True)
    await gateway.finish([Outcome(Q, done.entry_id, "done", "completed", "1")], KEEP)
    assert await idle_ms(gateway, kept.entry_id) >= 10_000
    call = bindings.renew(
        stream=qk.stream,
        running=qk.running,
        consumer=WORKER,
        lease_ms=30_000,
        entry_ids=[kept.entry_id, taken.entry_id, done.entry_id],
    )
    assert await gateway.scripts.run(call) == [taken.entry_id]
    assert await idle_ms(gateway, kept.entry_id) < 10_000


async def test_the_gateway_renews_per_queue(gateway: Gateway) -> None:
    (row,) = await active(gateway, "a")
    assert await gateway.renew(WORKER, {Q: [row.entry_id], "empty": []}) == []
    assert await gateway.renew("w2", {Q: [row.entry_id]}) == [(Q, row.entry_id)]
