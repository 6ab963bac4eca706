"""Fuzz the dashboard over real Redis, through the real ASGI app: arbitrary paths, path
parameters, query strings, JSON and raw bodies, headers, cookies, credentials and Host names
on every route of the OpenAPI document and every page. Whatever arrives, the answer is never
a 5xx, and it always carries the security headers.

Bounded: two hundred examples per fuzz test (the whole file runs in well under a minute; set
ENGINE_FUZZ_EXAMPLES for a longer hunt), no example database written to the checkout."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine import Engine, JobContext, UnrecoverableError
from engine.dashboard import create_app
from engine.dashboard.auth import Security
from engine.dashboard.guard import SECURITY_HEADERS
from engine.dashboard.openapi import openapi_document
from engine.testing import worker_running

TOKEN = "fuzzing-token-0123456789abcdef"
PAGES = ["/", "/search", "/queues/{queue}", "/jobs/{job_id}", "/dlq", "/cron", "/workers", "/metrics"]
PAGES += ["/login", "/logout", "/static/app.js", "/static/../__init__.py", "/api"]
ROUTES = sorted({*openapi_document("")["paths"], *PAGES})
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# What each route is documented (or written) to take: most examples use one of these, so
# they get past routing into the handlers; the rest try any method on any route.
DOCUMENTED = sorted(
    {(path, method.upper()) for path, ops in openapi_document("")["paths"].items() for method in ops}
    | {(path, "GET") for path in PAGES}
    | {("/login", "POST"), ("/logout", "POST")}
)
QUERY_NAMES = ["queue", "status", "task", "search", "q", "limit", "cursor", "minutes", "next", "all"]
FUZZ = settings(
    # ENGINE_FUZZ_EXAMPLES=5000 for a longer hunt.
    max_examples=int(os.environ.get("ENGINE_FUZZ_EXAMPLES", "200")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class World:
    """The apps under test and what is in Redis for them to find."""

    def __init__(self, engine: Engine, open_app: Any, token_app: Any, job_ids: list[str]) -> None:
        self.engine = engine
        self.open_app = open_app
        self.token_app = token_app
        self.job_ids = job_ids


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(redis_url: str) -> AsyncIterator[World]:
    engine = Engine(redis_url, namespace=f"fuzz{secrets.token_hex(4)}")

    @engine.task(timeout=10, max_attempts=1)
    async def charge(ctx: JobContext, order: int, note: str = "") -> str:
        await ctx.log(f"charging {order} <b>{note}</b>")
        raise UnrecoverableError(f"order {order} declined \\xff")

    @engine.task(timeout=10)
    async def resize(ctx: JobContext, image: Any = None) -> int:
        return 1

    async with engine:
        failed = [await charge.enqueue(i, note="x" * i) for i in range(3)]
        async with worker_running(engine):
            for job in failed:
                with contextlib.suppress(Exception):
                    await job.result(timeout=15)
        waiting = await resize.enqueue_many([(i,) for i in range(3)])
        delayed = await resize.with_options(delay=3600).enqueue({"deep": [[[["x"]]]]})
        gateway = engine.gateway
        qk = gateway.keys.queue("default")
        # Garbage as a lenient decoder leaves it, or as someone wrote it by hand.
        await gateway.redis.hset(
            qk.job(delayed.id), mapping={"progress": "nan", "attempts": "²", "payload": "\\xff["}
        )
        await gateway.redis.xadd(qk.dlq, {"j": "01FUZZGARBAGE", "at": "x", "attempts": "²"})
        await gateway.redis.xadd(qk.stream, {"j": "\\xfe", "p": "\\xff"})
        await gateway.redis.rpush(qk.logs(failed[0].id), "not json", "[]")
        ids = [j.id for j in (*failed, *waiting, delayed)] + ["01FUZZGARBAGE"]
        yield World(
            engine, create_app(engine), create_app(engine, token=TOKEN, metrics_token=TOKEN[::-1]), ids
        )


# --- strategies --------------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_tricky = st.sampled_from(
    [
        "",
        "default",
        "nope",
        "²",
        "٣",
        "0",
        "-1",
        "9" * 30,
        "1e308",
        "..",
        "%2F",
        "{q}",
        "a b",
        "\x00",
        "\\xff",
    ]
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode().rstrip("=")


_cursors = st.one_of(
    _json.map(lambda v: _cursor(["scan", v])),
    _json.map(lambda v: _cursor(["history", v])),
    _json.map(_cursor),
    st.tuples(st.integers(-2, 5), _json).map(lambda t: _cursor(["scan", list(t)])),
)
_values = st.one_of(_tricky, _text, st.integers().map(str), _cursors)
_query = st.dictionaries(st.one_of(st.sampled_from(QUERY_NAMES), _text), _values, max_size=4)
_header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
)
_header_name = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)


@st.composite
def _target(draw: st.DrawFn, world_ids: list[str]) -> tuple[str, str, str]:
    """(method, route template, concrete path)."""
    if draw(st.integers(0, 3)):
        route, method = draw(st.sampled_from(DOCUMENTED))
    else:
        route = draw(st.sampled_from([*ROUTES, "/{random}"]))
        method = draw(st.sampled_from(METHODS))
    out = route
    for name in ("queue", "job_id", "random"):
        token = "{" + name + "}"
        if token in out:
            value = draw(
                st.one_of(
                    st.sampled_from(["default", *world_ids]) if name != "random" else _text,
                    _tricky,
                    _text,
                )
            )
            out = out.replace(token, quote(value, safe=""))
    return method, route, out


def _body(world: World) -> st.SearchStrategy[tuple[bytes, str | None]]:
    ids = st.lists(st.one_of(st.sampled_from(world.job_ids), _json), max_size=3)
    shaped = st.fixed_dictionaries(
        {},
        optional={
            "task": st.one_of(st.sampled_from(["resize", "charge", "nope"]), _json),
            "args": st.one_of(st.lists(_json, max_size=3), _json),
            "kwargs": st.one_of(st.dictionaries(_text, _json, max_size=3), _json),
            "delay": st.one_of(st.floats(), _json),
            "timeout": st.one_of(st.floats(), _json),
            "max_attempts": st.one_of(st.integers(), _json),
            "queue": st.one_of(_tricky, _json),
            "ids": ids,
            "all": st.one_of(st.booleans(), _json),
            "search": st.one_of(_tricky, _json),
        },
    )
    return st.one_of(
        st.just((b"", None)),
        shaped.map(lambda v: (msgspec.json.encode(v), "application/json")),
        _json.map(lambda v: (msgspec.json.encode(v), "application/json")),
        st.binary(max_size=200).map(lambda b: (b, "application/json")),
        st.integers(1, 3000).map(lambda n: (b"[" * n + b"]" * n, "application/json")),
        st.dictionaries(st.sampled_from(["token", "csrf_token", "next"]), _text, max_size=3).map(
            lambda d: (
                "&".join(f"{quote(k)}={quote(v)}" for k, v in d.items()).encode(),
                "application/x-www-form-urlencoded",
            )
        ),
    )


def _credentials(security: Security) -> st.SearchStrategy[dict[str, str]]:
    session = security.new_session() if security.token else "none"
    sid = session.split(".")[0]
    good_csrf = security.new_csrf("session:" + sid)
    anonymous_csrf = security.new_csrf("anonymous")
    valid = st.sampled_from(
        [
            {"authorization": f"Bearer {TOKEN}"},
            {"cookie": f"engine_session={session}; engine_csrf={good_csrf}", "x-csrf-token": good_csrf},
        ]
        if security.enabled
        else [{"cookie": f"engine_csrf={anonymous_csrf}", "x-csrf-token": anonymous_csrf}]
    )
    # Mostly credentials that get in (so the handlers see the fuzz), the rest anything.
    return st.integers(0, 2).flatmap(lambda n: valid if n else _any_credentials(session))


def _any_credentials(session: str) -> st.SearchStrategy[dict[str, str]]:
    return st.one_of(
        st.just({}),
        st.just({"authorization": f"Bearer {TOKEN[::-1]}"}),
        st.just({"cookie": f"engine_session={session}"}),
        _header_text.map(lambda t: {"authorization": "Bearer " + t}),
        _header_text.map(lambda t: {"authorization": "Basic " + t}),
        st.binary(max_size=40).map(lambda b: {"authorization": "Basic " + base64.b64encode(b).decode()}),
        _header_text.map(lambda t: {"cookie": f"engine_session={t}; engine_csrf={t}", "x-csrf-token": t}),
        _header_text.map(lambda t: {"cookie": t}),
    )


_odd_hosts = st.one_of(
    st.sampled_from(["127.0.0.1:8080", "[::1]", "x.localhost", "evil.example", "[zz]", ":80", ""]),
    _header_text,
)
# Mostly a host the open dashboard answers to, so the fuzz gets past the Host check.
_hosts = st.integers(0, 3).flatmap(lambda n: st.just("localhost") if n else _odd_hosts)
_addresses = st.one_of(st.ip_addresses().map(str), st.sampled_from(["", "unix-socket", "::ffff:10.0.0.1"]))


async def _fuzz_one(asgi: Any, data: st.DataObject, world: World, security: Security) -> None:
    method, route, path = data.draw(_target(world.job_ids), label="method, route, path")
    query = data.draw(_query, label="query")
    body, content_type = data.draw(_body(world), label="body")
    headers: dict[str, str] = data.draw(_credentials(security), label="credentials")
    extra = data.draw(st.dictionaries(_header_name, _header_text, max_size=3), label="headers")
    headers = {**extra, **headers}
    if content_type is not None:
        headers.setdefault("content-type", content_type)
    headers["host"] = data.draw(_hosts, label="host")
    if data.draw(st.booleans(), label="accept html"):
        headers["accept"] = "text/html"
    address = data.draw(_addresses, label="client address")
    transport = httpx.ASGITransport(app=asgi, client=(address, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        request = c.build_request(
            method,
            path,
            params=query,
            content=body
            if method not in ("GET", "HEAD") or data.draw(st.booleans(), label="body on GET")
            else None,
            headers={k: v.encode("latin-1") for k, v in headers.items()},  # type: ignore[misc]
        )
        response = await c.send(request)
    # Shown by --hypothesis-show-statistics: what the examples reached.
    event(f"{response.status_code} {method} {route}")
    assert response.status_code < 500, (method, path, query, response.status_code, response.text[:500])
    for name, value in SECURITY_HEADERS:
        assert response.headers.get(name) == value, (method, path, response.status_code, name)
    json_error = response.headers.get("content-type") == "application/json" and method != "HEAD"
    if response.status_code >= 400 and json_error:
        assert response.json()["status"] == response.status_code


@FUZZ
@given(data=st.data())
async def test_fuzz_the_open_dashboard(world: World, data: st.DataObject) -> None:
    security = world.open_app.security
    await _fuzz_one(world.open_app, data, world, security)


@FUZZ
@given(data=st.data())
async def test_fuzz_the_dashboard_with_a_token(world: World, data: st.DataObject) -> None:
    await _fuzz_one(world.token_app, data, world, world.token_app.security)


@pytest.mark.parametrize("kind", ["open", "token"])
async def test_every_documented_route_answers_a_bare_request(world: World, kind: str) -> None:
    """Each route of the OpenAPI document, with its documented method and nothing else."""
    asgi = world.open_app if kind == "open" else world.token_app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://localhost") as c:
        for path, operations in openapi_document("")["paths"].items():
            concrete = path.replace("{queue}", "default").replace("{job_id}", world.job_ids[0])
            for method in operations:
                response = await c.request(
                    method.upper(), concrete, headers={"authorization": f"Bearer {TOKEN}"}
                )
                assert response.status_code < 500, (method, path, response.text[:300])
                for name, value in SECURITY_HEADERS:
                    assert response.headers.get(name) == value
