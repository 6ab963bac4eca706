"""log.lua through operations.log: a job's newest lines kept, and sent on with the job log on."""

from __future__ import annotations

from engine.broker.gateway import Gateway
from engine.broker.scripts import operations
from engine.broker.scripts.runner import Call
from engine.core.model import json_encoder
from tests.scripts.support import Q


def log_call(gateway: Gateway, job_id: str, message: str, keep: int) -> Call[None]:
    qk = gateway.keys.queue(Q)
    now = gateway.now_ms()
    return operations.log(
        logs=qk.logs(job_id),
        outbox=qk.outbox,
        joblog_flag=qk.joblog_flag,
        logged=qk.logged,
        job_id=job_id,
        queue=Q,
        now_ms=now,
        level="info",
        message=message,
        keep=keep,
        line=json_encoder.encode({"at": now, "level": "info", "message": message}),
    )


async def test_the_newest_lines_are_kept(gateway: Gateway) -> None:
    for message in ("one", "two", "three"):
        assert await gateway.scripts.run(log_call(gateway, "a", message, keep=2)) is None
    assert [line["message"] for line in await gateway.read_logs(Q, "a")] == ["two", "three"]
    assert await gateway.redis.xlen(gateway.keys.queue(Q).outbox) == 0  # no job log: no event


async def test_with_the_job_log_on_each_line_is_an_event(gateway: Gateway) -> None:
    await gateway.switch_on_joblog([Q])
    await gateway.scripts.run(log_call(gateway, "a", "hello", keep=10))
    ((_, event),) = await gateway.redis.xrange(gateway.keys.queue(Q).outbox)
    assert (event["e"], event["j"], event["level"], event["message"]) == ("log", "a", "info", "hello")
