"""Job-log shipper throughput: drain an outbox of enqueued+completed event pairs into PostgreSQL.

    python -m benchmarks.shipper [--events 100000] [--batch 2000] [--per-entry 100] [--apart]

Starts an embedded Valkey and an embedded PostgreSQL (``fast=True``: no fsync) unless
ENGINE_BENCH_REDIS_URL / ENGINE_BENCH_DATABASE_URL are set (the tables then go to a schema of
their own, dropped afterwards). The events are written first, pipelined, as the Lua scripts
write them: ``--per-entry`` events to an outbox entry (a JSON batch, as enqueue.lua and
finish.lua write; 1: an entry of fields per event, as cancel.lua and log.lua write). By
default each completion follows its enqueue, so a batch usually holds both events of a job
and one row insert covers them; ``--apart`` writes every enqueue before every completion, so
each row is inserted and later updated. The drain is timed from
the first read to the last acknowledgement: Redis reads, parsing, the PostgreSQL transactions
and the XDEL/XACK of every batch.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

import anyio
import asyncpg
import redis.asyncio as aioredis

from engine.embedded import EmbeddedPostgres, EmbeddedRedis
from engine.history import JobLog
from engine.history.shipper import Shipper, outbox_key


def _pair(i: int, now: int) -> tuple[dict[str, str], dict[str, str]]:
    job = uuid.uuid4().hex
    common = {"j": job, "q": "default", "task": "reports.export"}
    payload = json.dumps({"args": [i, f"user-{i}@example.com"], "kwargs": {"format": "csv", "rows": 1000}})
    enqueued = {
        "e": "enqueued",
        **common,
        "t": str(now),
        "v": "1",
        "payload": payload,
        "status": "waiting",
        "created": str(now),
    }
    completed = {
        "e": "completed",
        **common,
        "t": str(now + 250),
        "v": "2",
        "attempts": "1",
        "processed": str(now + 5),
        "result": json.dumps({"path": f"exports/{i}.csv", "rows": 1000}),
        "finished": str(now + 250),
        "payload": payload,  # every state event after the enqueue carries the payload
        "created": str(now),
    }
    return enqueued, completed


def _batched(events: list[dict[str, str]]) -> dict[str, str]:
    """One outbox entry for several events, as a script that changed a batch of jobs writes it."""
    inner = [{k: v for k, v in event.items() if k not in ("q", "t")} for event in events]
    return {"q": "default", "t": events[-1]["t"], "n": str(len(events)), "b": json.dumps(inner)}


async def fill(redis: Any, stream: str, events: int, apart: bool, per_entry: int) -> int:
    """XADD the pairs: each completion right after its enqueue, or all enqueues first; the
    number of entries written."""
    now = int(time.time() * 1000)
    pairs = [_pair(i, now + i) for i in range(events // 2)]
    order = [e for e, _ in pairs] + [c for _, c in pairs] if apart else [x for pair in pairs for x in pair]
    if per_entry > 1:
        order = [_batched(order[i : i + per_entry]) for i in range(0, len(order), per_entry)]
    chunk = 5000
    for start in range(0, len(order), chunk):
        async with redis.pipeline(transaction=False) as pipe:
            for fields in order[start : start + chunk]:
                pipe.xadd(stream, fields)
            await pipe.execute()
    return len(order)


async def run(
    redis_url: str, database_url: str, events: int, batch: int, apart: bool, per_entry: int
) -> dict[str, float]:
    namespace = f"bench{int(time.time() * 1000)}"
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    stream = outbox_key(namespace, "default")
    redis: Any = aioredis.Redis.from_url(redis_url, decode_responses=True)
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    joblog = JobLog(database_url, schema=schema)
    try:
        await joblog.connect()
        await joblog.migrate()
        t0 = time.perf_counter()
        entries = await fill(redis, stream, events, apart, per_entry)
        fill_s = time.perf_counter() - t0
        shipper = Shipper(redis, joblog, [stream], "bench", batch=batch)
        handled = 0
        t0 = time.perf_counter()
        while handled < entries:
            handled += await shipper.run_once()
        drain_s = time.perf_counter() - t0
        rows = int(await admin.fetchval(f'SELECT count(*) FROM "{schema}".jobs'))
        if rows != events // 2 or await redis.xlen(stream):
            raise RuntimeError(f"drain incomplete: {rows} job rows, {await redis.xlen(stream)} entries left")
        return {
            "xadd_events_per_s": events / fill_s,
            "ship_events_per_s": events / drain_s,
            "ship_job_rows_per_s": rows / drain_s,
            "drain_seconds": drain_s,
        }
    finally:
        await joblog.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
        await redis.delete(stream)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events (half as many jobs)")
    parser.add_argument("--batch", type=int, default=2000, help="shipper batch size")
    parser.add_argument("--per-entry", type=int, default=100, help="events per outbox entry (1: one each)")
    parser.add_argument(
        "--apart",
        action="store_true",
        help="all enqueue events first, then all completions (every job row inserted, then updated)",
    )
    args = parser.parse_args()
    redis_url = os.environ.get("ENGINE_BENCH_REDIS_URL")
    database_url = os.environ.get("ENGINE_BENCH_DATABASE_URL")
    servers: list[EmbeddedRedis | EmbeddedPostgres] = []
    try:
        if not redis_url:
            valkey = EmbeddedRedis()
            valkey.start()
            servers.append(valkey)
            redis_url = valkey.url
        if not database_url:
            postgres = EmbeddedPostgres(fast=True)
            postgres.start()
            servers.append(postgres)
            database_url = postgres.url
        results = anyio.run(run, redis_url, database_url, args.events, args.batch, args.apart, args.per_entry)
    finally:
        for server in reversed(servers):
            server.stop()
    layout = "all enqueues, then all completions" if args.apart else "each completion after its enqueue"
    jobs = args.events // 2
    print(f"events={args.events:,} ({jobs:,} jobs; {layout}) batch={args.batch} per entry={args.per_entry}")
    for name, value in results.items():
        print(f"  {name:24} {value:>12,.1f}" if name == "drain_seconds" else f"  {name:24} {value:>12,.0f}")


if __name__ == "__main__":
    main()
