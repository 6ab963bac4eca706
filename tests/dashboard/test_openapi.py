"""The OpenAPI document against what the server really answers: every documented response
of a populated app validated against its schema (every operation, every status it
documents), then schemathesis generating requests from the document (valid and invalid)
and checking that none is a 5xx and every answer conforms to the document.

Real Redis (and PostgreSQL for the history's shapes), the real ASGI app in-process through
httpx; bounded (ENGINE_SCHEMATHESIS_EXAMPLES for a longer hunt)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import jsonschema_rs
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine import Engine, JobContext, UnrecoverableError
from engine.core.errors import ConnectionFailed
from engine.dashboard import create_app
from engine.dashboard.auth import Security
from engine.dashboard.openapi import OPERATIONS, openapi_document
from engine.testing import worker_running
from tests.dashboard.test_dashboard_api import client, csrf_of
from tests.helpers import eventually

DOC = openapi_document("")
TOKEN = "openapi-token-0123456789abcdef"


def _template(path: str) -> str:
    """The documented path a concrete one is an instance of."""
    for template in DOC["paths"]:
        pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return template
    raise AssertionError(f"{path} is not a documented path")


class Conformance:
    """Validates responses against DOC and remembers which (method, path, status) it saw."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, int]] = set()
        self._validators: dict[str, Any] = {}

    def _validator(self, ref: str) -> Any:
        if ref not in self._validators:
            schema = {"$ref": ref, "components": DOC["components"]}
            self._validators[ref] = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
        return self._validators[ref]

    def check(self, response: httpx.Response) -> Any:
        method = response.request.method
        template = _template(urlsplit(str(response.request.url)).path)
        documented = DOC["paths"][template][method.lower()]["responses"]
        code = response.status_code
        assert str(code) in documented, (method, template, code, response.text[:300])
        spec = documented[str(code)]
        if "$ref" in spec:
            spec = DOC["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
        assert response.headers["content-type"] == "application/json", (method, template, code)
        schema = spec["content"]["application/json"]["schema"]
        body = response.json()
        errors = [e.message for e in self._validator(schema["$ref"]).iter_errors(body)]
        assert not errors, (method, template, code, errors[:5], response.text[:500])
        for name, header in spec.get("headers", {}).items():
            assert not header["required"] or name.lower() in response.headers, (method, template, name)
        if code >= 400:
            assert body["status"] == code
        self.seen.add((method, template, code))
        return body


def documented() -> set[tuple[str, str, int]]:
    return {
        (method.upper(), path, int(code))
        for path, operations in DOC["paths"].items()
        for method, operation in operations.items()
        for code in operation["responses"]
    }


def register(app: Engine, gate: anyio.Event) -> None:
    @app.task(timeout=10, max_attempts=1)
    async def charge(ctx: JobContext, order: int, note: str = "") -> str:
        await ctx.log(f"charging order {order} ({note})")
        await ctx.log("card declined", level="error")
        raise UnrecoverableError(f"order {order}: card declined")

    @app.task(timeout=10)
    async def resize(ctx: JobContext, image: int = 0) -> int:
        await ctx.progress(0.5)
        return image

    @app.task(timeout=30)
    async def hold(ctx: JobContext) -> None:
        await gate.wait()

    app.queue("events", partitions=3)

    @app.task(timeout=10, queue="events")
    async def record(ctx: JobContext, n: int) -> int:
        return n

    @app.cron("0 0 1 * *", tz="Asia/Jakarta", name="monthly_report")
    async def monthly_report(ctx: JobContext) -> None:
        pass


def _concrete(
    path: str, queue: str = "default", job_id: str = "01NOSUCHJOB", schedule: str = "monthly_report"
) -> str:
    return path.replace("{queue}", queue).replace("{job_id}", job_id).replace("{schedule}", schedule)


async def test_every_documented_response_fits_the_document(app: Engine, redis_url: str) -> None:
    gate = anyio.Event()
    register(app, gate)
    seen = Conformance()
    async with app, client(create_app(app)) as c, worker_running(app) as worker:
        csrf = await csrf_of(c)

        async def call(method: str, url: str, **kwargs: Any) -> Any:
            if method != "GET":
                kwargs["headers"] = {**csrf, **kwargs.get("headers", {})}
            return seen.check(await c.request(method, url, **kwargs))

        failed = [await app.tasks["charge"].enqueue(i, note="mango") for i in range(4)]
        for job in failed:
            with pytest.raises(Exception, match="declined"):
                await job.result(timeout=10)
        done = await app.tasks["resize"].enqueue(3)
        assert await done.result(timeout=10) == 3
        in_partition = await app.tasks["record"].enqueue(1)
        assert await in_partition.result(timeout=10) == 1
        delayed = await app.tasks["resize"].with_options(delay=600).enqueue(4)
        held = await app.tasks["hold"].enqueue()
        await eventually(lambda: _status_is(app, held.id, "active"), timeout=10, what="held job running")
        await eventually(lambda: _cron_led(c), timeout=15, what="cron schedule announced and led")
        await eventually(lambda: _worker_listed(c, worker.id), timeout=15, what="heartbeat")

        # --- what each operation answers when all is well --------------------------------
        index = await call("GET", "/api")
        assert sorted(DOC["paths"]) == index["endpoints"]
        assert (await call("GET", "/api/openapi.json"))["paths"].keys() == DOC["paths"].keys()
        await call("GET", "/api/csrf")
        overview = await call("GET", "/api/overview")
        assert overview["workers"] and overview["totals"]["dlq"] == 4
        await call("GET", "/api/queues")
        await call("GET", "/api/queues/default", params={"minutes": "5"})
        events = await call("GET", "/api/queues/events")
        assert [p["name"] for p in events["partitions"]] == list(app.layout.partitions("events"))
        await call("GET", "/api/throughput")
        await call("GET", "/api/throughput", params={"queue": "events", "minutes": "3"})
        first = await call("GET", "/api/queues/default/dlq", params={"limit": "1", "search": "mango"})
        assert first["count"] == 4 and first["next_cursor"]
        await call(
            "GET", "/api/queues/default/dlq", params={"cursor": first["next_cursor"], "task": "charge"}
        )
        for params in (
            {},
            {"status": "failed", "limit": "2"},
            {"status": "delayed"},
            {"status": "all", "task": "hold"},
            {"search": delayed.id},
            {"q": "mango"},
            {"queue": "events"},
            {"status": "completed"},
        ):
            await call("GET", "/api/jobs", params=params)
        for job_id in (failed[0].id, held.id, delayed.id, in_partition.id, done.id):
            detail = await call("GET", f"/api/jobs/{job_id}")
            await call("GET", f"/api/jobs/{job_id}/logs")
            await call("GET", f"/api/jobs/{job_id}/raw")
        assert detail["id"] == done.id and detail["result"] == 3
        partitioned = await call("GET", f"/api/jobs/{in_partition.id}")
        assert partitioned["queue"] == "events" and partitioned["partition"] in app.layout.partitions(
            "events"
        )
        await call("GET", "/api/workers")
        assert (await call("GET", "/api/cron"))["schedules"][0]["name"] == "monthly_report"
        await call("GET", "/api/tasks")
        await call("POST", "/api/queues/default/jobs/cancel", json={"task": "resize", "dry_run": True})
        await call("POST", "/api/queues/default/jobs/retry", json={"dry_run": True})
        await call("POST", "/api/queues/default/jobs/delete", json={"status": "delayed", "task": "nope"})
        await call("GET", "/api/queues/default/tasks")
        await call("GET", "/api/queues/default/errors", params={"task": "charge"})
        await call("GET", "/api/cron/monthly_report", params={"limit": "3"})
        await call("POST", "/api/cron/monthly_report/pause")
        await call("POST", "/api/cron/monthly_report/resume")
        await call("POST", "/api/cron/monthly_report/run")
        created = await call("POST", "/api/jobs", json={"task": "record", "args": [2], "delay": 60})
        assert created["queue"] == "events" and created["partition"] and created["status"] == "delayed"
        await call("POST", "/api/jobs", json={"task": "resize", "kwargs": {"image": 1}, "max_attempts": 2})

        # --- the errors each one documents ------------------------------------------------
        await call("POST", f"/api/jobs/{delayed.id}/retry")  # 409: not failed
        await call("POST", f"/api/jobs/{done.id}/cancel")  # 409: finished
        await call("DELETE", f"/api/jobs/{held.id}")  # 409: running
        await call("POST", f"/api/jobs/{failed[0].id}/retry")
        await call("POST", f"/api/jobs/{delayed.id}/cancel")
        await call("POST", f"/api/jobs/{held.id}/cancel")  # "cancelling"
        await call("DELETE", f"/api/jobs/{delayed.id}")
        replayed = await call(
            "POST", "/api/queues/default/dlq/replay", json={"ids": [failed[1].id, "01GONE"]}
        )
        assert replayed["skipped"] == [{"id": "01GONE", "reason": "its data is gone"}]
        await call("POST", "/api/queues/default/dlq/replay", json={"all": True, "search": failed[2].id})
        await call("POST", "/api/queues/default/dlq/purge", json={"task": "charge", "search": "mango"})
        await call("POST", "/api/queues/default/dlq/purge")
        assert (await call("POST", "/api/queues/default/pause"))["paused"] is True
        assert (await call("POST", "/api/queues/default/resume"))["paused"] is False
        await call("GET", "/api/jobs", params={"queue": "nope"})
        await call("POST", "/api/queues/nope/dlq/replay", json={"ids": [failed[3].id]})
        await call("GET", "/api/throughput", params={"queue": "nope"})
        for params in ({"limit": "0"}, {"status": "sleeping"}, {"cursor": "garbage!"}, {"search": "\x00"}):
            await call("GET", "/api/jobs", params=params)
        await call("GET", "/api/throughput", params={"minutes": "0"})
        await call("GET", "/api/queues/default", params={"minutes": "121"})
        await call("GET", "/api/queues/default/dlq", params={"limit": "many"})
        await call("POST", "/api/jobs", json={"args": [1]})
        await call("POST", "/api/queues/default/dlq/replay", json={"ids": "x"})
        await call("POST", "/api/queues/default/dlq/purge", json={"task": 5})
        big = b'{"task": "resize", "args": ["' + b"x" * (3 * 1024 * 1024) + b'"]}'
        for op in OPERATIONS:
            path = op.documented_path
            if "{" in path:
                await call(op.method, _concrete(path, "nope", schedule="nope"))  # 404: unknown
                await call(op.method, _concrete(path, "a b", "a b", "a b"))  # 422
            if op.body is not None:
                await call(op.method, _concrete(path), content=big)  # 413
            # 400: a Content-Length that is not one.
            await call(op.method, _concrete(path), headers={"content-length": "x"})
        rebound = httpx.ASGITransport(app=create_app(app))
        async with httpx.AsyncClient(transport=rebound, base_url="http://evil.example") as evil:
            for op in OPERATIONS:
                seen.check(await evil.request(op.method, _concrete(op.documented_path)))  # 403
        gate.set()

    # 401 and 429: with a token, no credentials, then wrong ones past the throttle.
    guarded = create_app(app, token=TOKEN)
    transport = httpx.ASGITransport(app=guarded, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        wrong = {"Authorization": "Bearer not-the-token-0123456789"}
        for op in OPERATIONS:
            seen.check(await c.request(op.method, _concrete(op.documented_path)))  # 401
        for _ in range(6):
            await c.get("/api/queues", headers=wrong)
        for op in OPERATIONS:
            seen.check(await c.request(op.method, _concrete(op.documented_path), headers=wrong))  # 429

    # 503: Redis down (the session check is the first thing to need it).
    down = Down(redis_url, namespace=app.namespace)
    session = {"Cookie": f"engine_session={Security(token=TOKEN).new_session()}"}
    try:
        async with client(create_app(down, token=TOKEN)) as c:
            for op in OPERATIONS:
                seen.check(await c.request(op.method, _concrete(op.documented_path), headers=session))
    finally:
        await down.close()

    missing = documented() - seen.seen
    assert not missing, sorted(missing)


class Down(Engine):
    """An engine whose Redis cannot be reached, at once (no connection retries to wait for)."""

    async def ready(self) -> Any:
        raise ConnectionFailed("cannot reach Redis at redis://down.invalid: a test")


async def _status_is(app: Engine, job_id: str, status: str) -> bool:
    info = await app.job(job_id).info()
    return info is not None and info.status == status


async def _cron_led(c: httpx.AsyncClient) -> bool:
    schedules = (await c.get("/api/cron")).json()["schedules"]
    return bool(schedules) and schedules[0]["leader"] is not None


async def _worker_listed(c: httpx.AsyncClient, worker_id: str) -> bool:
    return any(w["id"] == worker_id for w in (await c.get("/api/workers")).json()["workers"])


async def test_history_shapes_fit_the_document(logged_app: Engine) -> None:
    """Jobs read back from the PostgreSQL job log (listings, and a job gone from Redis)."""
    app = logged_app
    register(app, anyio.Event())
    seen = Conformance()
    async with app, client(create_app(app)) as c, worker_running(app):
        done = await app.tasks["resize"].enqueue(7)
        assert await done.result(timeout=10) == 7
        failed = await app.tasks["charge"].enqueue(1, note="kiwi")
        with pytest.raises(Exception, match="declined"):
            await failed.result(timeout=10)

        async def shipped() -> bool:
            page = (await c.get("/api/jobs", params={"status": "completed"})).json()
            return page["source"] == "history" and [j["id"] for j in page["jobs"]] == [done.id]

        await eventually(shipped, timeout=15, what="completed job in the history")
        for params in ({"status": "completed"}, {"search": "kiwi"}, {}, {"task": "resize"}):
            page = seen.check(await c.get("/api/jobs", params=params))
        assert page["source"] == "history"
        gateway = app.gateway
        qk = gateway.keys.queue("default")
        await gateway.redis.delete(qk.job(done.id), qk.logs(done.id))
        detail = seen.check(await c.get(f"/api/jobs/{done.id}"))
        assert detail["source"] == "history" and detail["result"] == 7
        seen.check(await c.get(f"/api/jobs/{done.id}/logs"))
        seen.check(await c.get(f"/api/jobs/{done.id}/raw"))


# --- schemathesis --------------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("ENGINE_SCHEMATHESIS_EXAMPLES", "300"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
SCHEMA = schemathesis.openapi.from_dict(DOC)
LABELS = [f"{op.method} {op.documented_path}" for op in OPERATIONS]
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class World:
    def __init__(self, engine: Engine, asgi: Any, known: dict[str, list[str]]) -> None:
        self.engine = engine
        self.asgi = asgi
        self.known = known


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(redis_url: str) -> AsyncIterator[World]:
    engine = Engine(redis_url, namespace=f"openapi{secrets.token_hex(4)}")
    gate = anyio.Event()
    register(engine, gate)
    async with engine:
        failed = [await engine.tasks["charge"].enqueue(i) for i in range(3)]
        async with worker_running(engine):
            for job in failed:
                with pytest.raises(Exception, match="declined"):
                    await job.result(timeout=10)
            done = await engine.tasks["record"].enqueue(1)
            assert await done.result(timeout=10) == 1
        waiting = await engine.tasks["resize"].enqueue(2)
        delayed = await engine.tasks["resize"].with_options(delay=3600).enqueue(3)
        ids = [j.id for j in (*failed, done, waiting, delayed)]
        yield World(engine, create_app(engine, token=TOKEN), {"queue": ["default", "events"], "job_id": ids})


_strategies: dict[tuple[str, GenerationMode], Any] = {}


def _cases(label: str, mode: GenerationMode, world: World) -> Any:
    """Cases of one operation: schemathesis's own, and with the path naming something that
    exists (so valid requests reach the handlers' real answers)."""
    if (label, mode) not in _strategies:
        method, path = label.split(" ", 1)
        operation = SCHEMA[path][method]
        generated = operation.as_strategy(generation_mode=mode, headers=BEARER)
        names = [n for n in world.known if "{" + n + "}" in path]
        if names:
            real = st.fixed_dictionaries({n: st.sampled_from(world.known[n]) for n in names}).flatmap(
                lambda params: operation.as_strategy(
                    generation_mode=mode, path_parameters=params, headers=BEARER
                )
            )
            generated = st.one_of(generated, real)
        _strategies[label, mode] = generated
    return _strategies[label, mode]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_schemathesis_against_the_app(world: World, data: st.DataObject) -> None:
    label = data.draw(st.sampled_from(LABELS), label="operation")
    mode = data.draw(st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]), label="mode")
    case = data.draw(_cases(label, mode, world), label="case")
    kwargs = case.as_transport_kwargs(base_url="http://localhost")
    # With the bearer token (fixed, so that the invalid requests are invalid elsewhere): state
    # changes need no CSRF token, and the requests reach the handlers.
    headers = kwargs.get("headers", {})
    async with client(world.asgi) as c:
        request = c.build_request(
            kwargs["method"],
            kwargs["url"],
            params=kwargs.get("params"),
            headers=headers,
            json=kwargs.get("json"),
            content=kwargs.get("data"),
        )
        response = await c.send(request)
    event(f"{mode.value} {response.status_code} {label}")
    case.validate_response(response, checks=CHECKS, headers=headers)
