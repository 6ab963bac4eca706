"""The dashboard's JSON API, metrics and security, against a real Redis (and PostgreSQL for
history), through httpx's ASGI transport."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from engine import Backoff, Engine, JobContext, UnrecoverableError
from engine.dashboard import create_app
from engine.dashboard.auth import SESSION_TTL_S, Security
from engine.dashboard.server import serving
from engine.testing import worker_running
from tests.helpers import ROOT, eventually

FAST = Backoff(initial=0.05, factor=2.0, max=0.2, jitter=0.0)


def client(asgi: Any) -> httpx.AsyncClient:
    # An open dashboard answers only to loopback host names (DNS rebinding).
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://localhost")


async def csrf_of(c: httpx.AsyncClient) -> dict[str, str]:
    response = await c.get("/api/csrf")
    assert response.status_code == 200
    token = response.json()["csrf_token"]
    assert c.cookies.get("engine_csrf") == token
    return {"X-CSRF-Token": token}


def register(app: Engine, broken: dict[str, bool]) -> dict[str, Any]:
    """A task that fails while ``broken["on"]`` and a slow one, for the tests below."""

    @app.task(timeout=10, max_attempts=1)
    async def charge(ctx: JobContext, order: int, note: str = "") -> str:
        await ctx.log(f"charging order {order} ({note})")
        if broken["on"]:
            await ctx.log("card <b>declined</b>", level="error")
            raise UnrecoverableError(f"order {order}: card declined <img src=x onerror=alert(1)>")
        return f"charged {order}"

    @app.task(timeout=10)
    async def resize(ctx: JobContext, image: int) -> int:
        await ctx.progress(0.5)
        return image

    return {"charge": charge, "resize": resize}


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.cluster_too
async def test_queues_jobs_filters_pages_and_bad_parameters(app: Engine) -> None:
    tasks = register(app, {"on": False})
    async with app, client(create_app(app)) as c:
        waiting = await tasks["resize"].enqueue_many([(i,) for i in range(7)])
        await tasks["charge"].enqueue(1, note="blue pineapple")
        delayed = await tasks["resize"].with_options(delay=600).enqueue(99)

        queues = (await c.get("/api/queues")).json()["queues"]
        assert [(q["name"], q["waiting"], q["delayed"]) for q in queues] == [("default", 8, 1)]
        one = (await c.get("/api/queues/default")).json()
        assert one["waiting"] == 8 and len(one["throughput"]) == 60

        # Waiting jobs oldest first, three per page, cursor to the end.
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            params = {"queue": "default", "status": "waiting", "task": "resize", "limit": "3"}
            page = (
                await c.get("/api/jobs", params={**params, **({"cursor": cursor} if cursor else {})})
            ).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [j.id for j in waiting]

        found = (await c.get("/api/jobs", params={"search": "PINEAPPLE"})).json()
        assert [j["task"] for j in found["jobs"]] == ["charge"] and found["jobs"][0]["kwargs"]["note"]
        assert "ENGINE_DATABASE_URL" in found["notice"]  # live jobs only without the job log
        by_id = (await c.get("/api/jobs", params={"search": delayed.id})).json()
        assert [j["id"] for j in by_id["jobs"]] == [delayed.id]
        delayed_page = (await c.get("/api/jobs", params={"status": "delayed"})).json()
        assert [j["id"] for j in delayed_page["jobs"]] == [delayed.id]
        completed = (await c.get("/api/jobs", params={"status": "completed"})).json()
        assert completed["jobs"] == [] and "enable the job log" in completed["notice"]

        for params, message in [
            ({"status": "sleeping"}, "unknown status"),
            ({"limit": "0"}, "limit"),
            ({"limit": "many"}, "limit"),
            ({"cursor": "garbage!"}, "invalid cursor"),
            ({"task": "no spaces allowed"}, "invalid task name"),
            ({"search": "x" * 500}, "200 characters"),
            ({"queue": "{bad}"}, "invalid queue name"),
        ]:
            response = await c.get("/api/jobs", params=params)
            assert response.status_code == 422, params
            assert response.headers["content-type"] == "application/json"
            assert message in response.json()["error"]
        response = await c.get("/api/throughput", params={"minutes": "0"})
        assert response.status_code == 422 and "minutes" in response.json()["error"]

        for path in ("/api/queues/nope", "/api/jobs?queue=nope", "/api/queues/nope/dlq", "/api/jobs/01NOPE"):
            response = await c.get(path)
            assert response.status_code == 404, path
            assert response.json()["status"] == 404 and response.json()["error"]
        assert "unknown queue 'nope'" in (await c.get("/api/queues/nope")).json()["error"]
        response = await c.get("/api/no/such/endpoint")
        assert response.status_code == 404 and "no API endpoint" in response.json()["error"]
        assert (await c.get("/api/jobs/bad%20id")).status_code == 422

        doc = (await c.get("/api/openapi.json")).json()
        assert doc["openapi"].startswith("3.") and "/api/jobs/{job_id}/retry" in doc["paths"]
        assert {"get", "post"} <= set(doc["paths"]["/api/jobs"])


@pytest.mark.cluster_too
async def test_job_detail_retry_cancel_delete_and_escaping(app: Engine) -> None:
    broken = {"on": True}
    tasks = register(app, broken)
    async with app, client(create_app(app)) as c, worker_running(app):
        job = await tasks["charge"].enqueue(7, note='<script>alert("pwned")</script>')
        with pytest.raises(Exception, match="card declined"):
            await job.result(timeout=10)

        detail = (await c.get(f"/api/jobs/{job.id}")).json()
        assert (detail["status"], detail["attempts"], detail["max_attempts"]) == ("failed", 1, 1)
        assert "UnrecoverableError" in detail["traceback"] and "card declined" in detail["error"]
        assert [line["level"] for line in detail["logs"]] == ["info", "error"]
        assert detail["actions"] == {"retry": True, "cancel": False, "delete": True}
        assert detail["timeline"][0]["label"] == "enqueued"
        assert (await c.get(f"/api/jobs/{job.id}/logs")).json()["logs"][0]["message"].startswith("charging")

        # The page shows payload, error and log lines as text, never as markup.
        page = await c.get(f"/jobs/{job.id}")
        assert page.status_code == 200
        html = page.text
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>declined" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html and "card &lt;b&gt;declined&lt;/b&gt;" in html
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        # The search results page too.
        results = await c.get("/search", params={"q": "pwned"})
        assert job.id in results.text and "<script>alert" not in results.text

        # State changes need the CSRF token.
        refused = await c.post(f"/api/jobs/{job.id}/retry")
        assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
        wrong = await c.post(
            f"/api/jobs/{job.id}/retry", headers={"X-CSRF-Token": "forged-token-value-123456"}
        )
        assert wrong.status_code == 403
        assert (await job.info()).status == "failed"  # type: ignore[union-attr]
        csrf = await csrf_of(c)
        broken["on"] = False
        response = await c.post(f"/api/jobs/{job.id}/retry", headers=csrf)
        assert response.status_code == 200 and response.json()["status"] == "waiting"
        assert await job.result(timeout=10) == "charged 7"
        again = await c.post(f"/api/jobs/{job.id}/retry", headers=csrf)
        assert again.status_code == 409 and "only failed jobs" in again.json()["error"]

        later = await tasks["resize"].with_options(delay=600).enqueue(1)
        assert (await c.post(f"/api/jobs/{later.id}/cancel", headers=csrf)).json()["status"] == "cancelled"
        assert (await c.post(f"/api/jobs/{later.id}/cancel", headers=csrf)).status_code == 409
        assert (await c.delete(f"/api/jobs/{later.id}")).status_code == 403  # no CSRF token
        assert (await c.delete(f"/api/jobs/{later.id}", headers=csrf)).json() == {
            "id": later.id,
            "deleted": True,
        }
        assert (await c.delete(f"/api/jobs/{later.id}", headers=csrf)).status_code == 404
        assert (await c.post("/api/jobs/01NOSUCHJOB/retry", headers=csrf)).status_code == 404


@pytest.mark.cluster_too
async def test_dead_letters_list_replay_and_purge(app: Engine) -> None:
    broken = {"on": True}
    tasks = register(app, broken)
    async with app, client(create_app(app)) as c, worker_running(app):
        jobs = [await tasks["charge"].enqueue(i, note="red" if i < 3 else "green") for i in range(6)]
        await eventually(lambda: _dlq_count(app, 6), timeout=15, what="6 dead letters")
        csrf = await csrf_of(c)

        listed = (await c.get("/api/queues/default/dlq", params={"search": "red", "limit": "2"})).json()
        assert listed["count"] == 6 and len(listed["jobs"]) == 2 and listed["next_cursor"]
        rest = (
            await c.get("/api/queues/default/dlq", params={"search": "red", "cursor": listed["next_cursor"]})
        ).json()
        assert {j["id"] for j in listed["jobs"] + rest["jobs"]} == {j.id for j in jobs[:3]}

        broken["on"] = False
        one = await c.post(
            "/api/queues/default/dlq/replay", json={"ids": [jobs[0].id, "01UNKNOWN"]}, headers=csrf
        )
        assert one.json()["replayed"] == 1 and one.json()["skipped"] == [
            {"id": "01UNKNOWN", "reason": "its data is gone"}
        ]
        matching = await c.post(
            "/api/queues/default/dlq/replay", json={"all": True, "search": "red"}, headers=csrf
        )
        assert matching.json() == {"replayed": 2}
        for job in jobs[:3]:
            assert await job.result(timeout=10) == f"charged {jobs.index(job)}"

        for body, message in [
            ({}, "give 'ids'"),
            ({"ids": "x"}, "'ids' must be a JSON array"),
            ({"ids": ["a b"]}, "invalid job id"),
            ({"all": True, "ids": [jobs[3].id]}, "not both"),
            ({"all": True, "task": 5}, "must be a string"),
        ]:
            response = await c.post("/api/queues/default/dlq/replay", json=body, headers=csrf)
            assert response.status_code == 422 and message in response.json()["error"], body
        bad_json = await c.post("/api/queues/default/dlq/replay", content=b"{nope", headers=csrf)
        assert bad_json.status_code == 422 and "must be JSON" in bad_json.json()["error"]
        for path in ("/api/queues/default/dlq/replay", "/api/queues/default/jobs/cancel", "/api/jobs"):
            # JSON null is not an empty body: refused like any body that is not an object.
            null = await c.post(path, content=b"null", headers={**csrf, "Content-Type": "application/json"})
            assert null.status_code == 422 and "the body" in null.json()["error"], (path, null.text)
        assert (await c.post("/api/queues/nope/dlq/purge", json={}, headers=csrf)).status_code == 404

        purged = await c.post("/api/queues/default/dlq/purge", json={"search": str(jobs[3].id)}, headers=csrf)
        assert purged.json() == {"purged": 1}
        assert (await c.post("/api/queues/default/dlq/purge", json={}, headers=csrf)).json() == {"purged": 2}
        assert await app.dlq("default").count() == 0


async def _dlq_count(app: Engine, n: int) -> bool:
    return await app.dlq("default").count() == n


async def test_enqueue_checks_the_signature(app: Engine) -> None:
    register(app, {"on": False})
    async with app, client(create_app(app)) as c:
        csrf = await csrf_of(c)
        ok = await c.post(
            "/api/jobs", json={"task": "charge", "args": [5], "kwargs": {"note": "x"}}, headers=csrf
        )
        assert ok.status_code == 201, ok.text
        created = ok.json()
        assert created["status"] == "waiting" and ok.headers["location"] == f"/api/jobs/{created['id']}"
        info = await app.job(created["id"]).info()
        assert info is not None and (info.args, info.kwargs) == ([5], {"note": "x"})
        later = await c.post("/api/jobs", json={"task": "resize", "args": [1], "delay": 60}, headers=csrf)
        assert later.status_code == 201 and later.json()["status"] == "delayed"

        for body, message in [
            ({"task": "charge", "args": []}, "missing a required argument: 'order'"),
            ({"task": "charge", "args": [1, 2, 3]}, "too many positional arguments"),
            (
                {"task": "charge", "kwargs": {"order": 1, "colour": "red"}},
                "unexpected keyword argument 'colour'",
            ),
            ({"task": "nope"}, "unknown task 'nope'"),
            ({"args": [1]}, "'task' is required"),
            ({"task": "charge", "args": {"order": 1}}, "'args' must be a JSON array"),
            ({"task": "charge", "kwargs": [1]}, "'kwargs' must be a JSON object"),
            ({"task": "charge", "args": [1], "delay": -5}, "'delay' must be a number"),
            ({"task": "charge", "args": [1], "queue": "a b"}, "invalid queue name"),
            ({"task": "charge", "args": [1], "priority": 1}, "unknown field(s) priority"),
            ({"task": "charge", "args": [1, "x" * 1_100_000]}, "over the limit"),
            ({"task": "charge", "args": ["x"]}, "argument 'order' must be int, not str 'x'"),
            (["charge"], "must be a JSON object"),
        ]:
            response = await c.post("/api/jobs", json=body, headers=csrf)
            assert response.status_code == 422, (body, response.text)
            assert message in response.json()["error"], (body, response.json())
        not_json = await c.post("/api/jobs", content=b"task=charge", headers=csrf)
        assert not_json.status_code == 422 and "must be JSON" in not_json.json()["error"]
        assert (await c.post("/api/jobs", json={"task": "charge", "args": [1]})).status_code == 403
        assert (await app.stats())["default"]["waiting"] == 1  # nothing refused was written
        tasks = (await c.get("/api/tasks")).json()["tasks"]
        assert [t["signature"] for t in tasks] == [
            "charge(order: 'int', note: 'str' = '') -> 'str'",
            "resize(image: 'int') -> 'int'",
        ]


@pytest.mark.cluster_too
async def test_every_page_renders(app: Engine) -> None:
    broken = {"on": True}
    tasks = register(app, broken)

    @app.cron("0 0 1 * *", tz="Asia/Jakarta", name="monthly_report")
    async def monthly_report(ctx: JobContext) -> None:
        pass

    async with app, client(create_app(app)) as c, worker_running(app) as worker:
        failed = await tasks["charge"].enqueue(3, note="lychee")
        with pytest.raises(Exception, match="declined"):
            await failed.result(timeout=10)
        await eventually(lambda: _cron_led(c), timeout=15, what="cron schedule announced and led")
        await eventually(lambda: _worker_listed(c, worker.id), timeout=15, what="heartbeat")

        pages = {
            "/": ["Throughput", 'data-queue="default"', "Workers alive"],
            "/queues/default": ["failed <b>1</b>", failed.id],
            "/queues/default?status=failed&q=lychee": [failed.id],
            "/queues/default?status=completed": ["enable the job log (ENGINE_DATABASE_URL)"],
            f"/jobs/{failed.id}": ["Traceback", "charging order 3 (lychee)", "Retry"],
            "/dlq": ["Replay selected", "Purge all", failed.id],
            "/dlq?queue=default&q=lychee": ["Replay all matching", "Purge matching", failed.id],
            "/search?q=lychee&status=failed": [failed.id, "1 job found"],
            "/cron": ["monthly_report", "0 0 1 * *", "Asia/Jakarta", worker.id],
            "/workers": [worker.id, "/default"],
        }
        for path, expected in pages.items():
            response = await c.get(path)
            assert response.status_code == 200, (path, response.text[:500])
            assert response.headers["content-type"].startswith("text/html")
            for text in expected:
                assert text in response.text, (path, text)
        missing = await c.get("/queues/nope", headers={"Accept": "text/html"})
        assert missing.status_code == 404 and "unknown queue &#39;nope&#39;" in missing.text
        assert (await c.get("/jobs/01NOPE")).status_code == 404
        assert (await c.get("/no/such/page")).status_code == 404
        bad = await c.get("/queues/default?status=sleeping")
        assert bad.status_code == 422 and "unknown status" in bad.text
        assert (await c.get("/login")).status_code == 303  # no token configured: nothing to log in to
        assert (await c.get("/static/app.js")).headers["content-type"].startswith("text/javascript")


async def _cron_led(c: httpx.AsyncClient) -> bool:
    schedules = (await c.get("/api/cron")).json()["schedules"]
    return bool(schedules) and schedules[0]["leader"] is not None and schedules[0]["next_run"] is not None


async def _worker_listed(c: httpx.AsyncClient, worker_id: str) -> bool:
    return any(w["id"] == worker_id for w in (await c.get("/api/workers")).json()["workers"])


async def test_redis_down_is_a_clear_503(namespace: str) -> None:
    from engine.embedded import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    engine = Engine(url, namespace=namespace, connect_timeout=1.0)
    try:
        async with client(create_app(engine)) as c:
            api = await c.get("/api/queues")
            assert api.status_code == 503 and f"cannot reach Redis at {url}" in api.json()["error"]
            page = await c.get("/")
            assert page.status_code == 503 and "cannot reach Redis" in page.text
    finally:
        await engine.close()


# --- metrics ---------------------------------------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name}{{{wanted}}} not in metrics"
    return float(match.group(1))


def queue_sum(text: str, name: str, queue: str, **labels: str) -> float:
    """A per-(queue, task) series summed over its tasks."""
    rest = "".join(f',{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + r'\{queue="' + re.escape(queue) + r'",task="[^"]*"' + re.escape(rest)
    found = re.findall(pattern + r"\} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{{queue={queue!r}, task=...{rest}}} not in metrics"
    return sum(float(v) for v in found)


@pytest.mark.cluster_too
async def test_prometheus_metrics(app: Engine) -> None:
    gate = anyio.Event()
    broken = {"on": True}
    tasks = register(app, broken)

    @app.task(queue="slow", timeout=30)
    async def hold(ctx: JobContext) -> None:
        await gate.wait()

    async with app, client(create_app(app)) as c:
        await tasks["resize"].enqueue_many([(i,) for i in range(3)])
        await hold.enqueue()  # waits until a worker comes: lag grows
        await eventually(lambda: _lag_at_least(c, "slow", 0.2), timeout=10, what="lag")
        text = (await c.get("/metrics")).text
        assert metric(text, "engine_queue_depth", queue="default") == 3
        assert "# TYPE engine_job_duration_seconds histogram" in text
        assert metric(text, "engine_outbox_length", queue="default") == 0  # no job log here
        gateway = app.gateway
        await gateway.redis.xadd(gateway.keys.queue("default").outbox, {"e": "log"})
        assert metric((await c.get("/metrics")).text, "engine_outbox_length", queue="default") == 1

        async with worker_running(app, concurrency=4):
            await tasks["charge"].enqueue(1)
            await eventually(lambda: _metric_is(c, "engine_jobs_completed_total", "default", 3), what="done")
            await eventually(lambda: _metric_is(c, "engine_dlq_depth", "default", 1), what="dead letter")
            # The held job: pending in the stream's group and, once a heartbeat says so, active.
            await eventually(lambda: _metric_is(c, "engine_queue_pending", "slow", 1), what="pending")
            await eventually(
                lambda: _metric_is(c, "engine_queue_active", "slow", 1), timeout=15, what="active"
            )
            text = (await c.get("/metrics")).text
            assert metric(text, "engine_queue_depth", queue="slow") == 0
            assert metric(text, "engine_queue_lag_seconds", queue="slow") == 0
            assert metric(text, "engine_workers_alive") == 1
            assert queue_sum(text, "engine_jobs_failed_total", "default") == 1
            assert metric(text, "engine_jobs_enqueued_total", queue="default") == 4
            count = queue_sum(text, "engine_job_duration_seconds_count", "default")
            assert count == 4 == queue_sum(text, "engine_job_duration_seconds_bucket", "default", le="+Inf")
            buckets = re.findall(
                r'engine_job_duration_seconds_bucket\{queue="default",task="resize",le="[^"]+"\} (\d+)', text
            )
            assert [int(b) for b in buckets] == sorted(int(b) for b in buckets)  # cumulative
            assert queue_sum(text, "engine_job_duration_seconds_sum", "default") < 4 * 5
            gate.set()
        assert (await c.get("/metrics")).headers["content-type"].startswith("text/plain; version=0.0.4")


async def _metrics_text(c: httpx.AsyncClient) -> str:
    return (await c.get("/metrics")).text


async def _metric_is(c: httpx.AsyncClient, name: str, queue: str, value: float) -> bool:
    text = await _metrics_text(c)
    if name == "engine_jobs_completed_total":  # a series per (queue, task)
        return queue_sum(text, name, queue) == value
    return metric(text, name, queue=queue) == value


async def _lag_at_least(c: httpx.AsyncClient, queue: str, seconds: float) -> bool:
    return metric(await _metrics_text(c), "engine_queue_lag_seconds", queue=queue) >= seconds


# --- security --------------------------------------------------------------------------------

TOKEN = "s3cret-token-for-tests"


async def test_token_bearer_and_login_cookie(app: Engine) -> None:
    register(app, {"on": False})
    async with app, client(create_app(app, token=TOKEN)) as c:
        refused = await c.get("/api/queues")
        assert refused.status_code == 401 and "authentication required" in refused.json()["error"]
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/api/queues", headers={"Authorization": "Bearer wrong"})).status_code == 401
        page = await c.get("/queues/default?status=failed", headers={"Accept": "text/html"})
        assert (
            page.status_code == 303
            and page.headers["location"] == "/login?next=%2Fqueues%2Fdefault%3Fstatus%3Dfailed"
        )
        assert (await c.get("/static/app.css")).status_code == 200  # assets are public

        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await c.get("/api/queues", headers=bearer)).status_code == 200
        assert (await c.get("/metrics", headers=bearer)).status_code == 200
        # A bearer header cannot come from a cross-site form: no CSRF token needed.
        created = await c.post("/api/jobs", json={"task": "resize", "args": [1]}, headers=bearer)
        assert created.status_code == 201

        form = await c.get("/login?next=/dlq")
        assert form.status_code == 200 and 'name="token"' in form.text
        csrf = c.cookies["engine_csrf"]
        wrong = await c.post("/login", data={"token": "nope", "csrf_token": csrf, "next": "/dlq"})
        assert wrong.status_code == 401 and "Wrong token" in wrong.text
        no_csrf = await c.post("/login", data={"token": TOKEN, "next": "/dlq"})
        assert no_csrf.status_code == 403 and "engine_session" not in no_csrf.headers.get("set-cookie", "")
        ok = await c.post(
            "/login", data={"token": TOKEN, "csrf_token": csrf, "next": "https://evil.example/"}
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # never off-site
        cookie = ok.headers["set-cookie"]
        assert "engine_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert TOKEN not in cookie
        assert (await c.get("/", headers={"Accept": "text/html"})).status_code == 200
        assert (await c.get("/api/queues")).status_code == 200
        # A session cookie is what a browser sends cross-site: state changes need CSRF, and
        # the CSRF token is bound to the session (the one from before the login no longer passes).
        assert (await c.post("/api/jobs", json={"task": "resize", "args": [2]})).status_code == 403
        stale = {"X-CSRF-Token": csrf}
        assert (
            await c.post("/api/jobs", json={"task": "resize", "args": [2]}, headers=stale)
        ).status_code == 403
        csrf = c.cookies["engine_csrf"]
        made = await c.post("/api/jobs", json={"task": "resize", "args": [2]}, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201
        out = await c.post("/logout", data={"csrf_token": csrf})
        assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
        assert "engine_session" not in c.cookies
        assert (await c.get("/api/queues")).status_code == 401

    # A session is an HMAC keyed by the token: forged, expired or foreign ones do not pass.
    security = Security(token=TOKEN)
    other = Security(token="another-token-entirely")
    async with client(create_app(app, token=TOKEN)) as fresh:
        for value, status in [
            (security.new_session(), 200),
            ("99999999999.deadbeef", 401),
            (security.new_session(now=time.time() - SESSION_TTL_S - 5), 401),
            (other.new_session(), 401),
        ]:
            response = await fresh.get("/api/queues", headers={"Cookie": f"engine_session={value}"})
            assert response.status_code == status, value


async def test_basic_auth_and_read_only(app: Engine) -> None:
    register(app, {"on": False})
    async with app:
        job = await app.tasks["resize"].enqueue(1)
        asgi = create_app(app, basic_auth=("admin", "pa:ss-long-enough-password"), read_only=True)
        async with client(asgi) as c:
            refused = await c.get("/", headers={"Accept": "text/html"})
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
            creds = base64.b64encode(b"admin:pa:ss-long-enough-password").decode()
            wrong = base64.b64encode(b"admin:nope").decode()
            assert (await c.get("/", headers={"Authorization": f"Basic {wrong}"})).status_code == 401
            auth = {"Authorization": f"Basic {creds}"}
            page = await c.get(f"/jobs/{job.id}", headers=auth)
            assert page.status_code == 200 and "read-only" in page.text and "data-action" not in page.text
            csrf = (await c.get("/api/csrf", headers=auth)).json()["csrf_token"]
            refused = await c.post(f"/api/jobs/{job.id}/cancel", headers={**auth, "X-CSRF-Token": csrf})
            assert refused.status_code == 403 and "read-only" in refused.json()["error"]
            assert (await job.info()).status == "waiting"  # type: ignore[union-attr]

    with pytest.raises(ValueError, match="USER:PASSWORD"):
        from engine.dashboard import parse_basic_auth

        parse_basic_auth("no-colon")
    with pytest.raises(ValueError, match="non-empty"):
        create_app(app, token="  ")


async def test_mounted_under_a_prefix(app: Engine) -> None:
    """app.dashboard() is meant to be mounted in a service: links and cookies follow the prefix."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    register(app, {"on": False})
    service = Starlette(routes=[Mount("/ops/jobs", create_app(app, token=TOKEN))])
    async with app, client(service) as c:
        await app.tasks["resize"].enqueue(1)
        login = await c.get("/ops/jobs/queues/default", headers={"Accept": "text/html"})
        assert login.headers["location"] == "/ops/jobs/login?next=%2Fqueues%2Fdefault"
        assert "Path=/ops/jobs;" in login.headers["set-cookie"]  # the CSRF cookie
        form = await c.get("/ops/jobs/login")
        assert 'action="/ops/jobs/login"' in form.text
        ok = await c.post(
            "/ops/jobs/login", data={"token": TOKEN, "csrf_token": c.cookies["engine_csrf"], "next": "/"}
        )
        assert ok.headers["location"] == "/ops/jobs/"
        page = await c.get("/ops/jobs/")
        assert page.status_code == 200 and 'href="/ops/jobs/static/app.css"' in page.text
        assert (await c.get("/ops/jobs/static/app.js")).status_code == 200
        assert (await c.get("/ops/jobs/api/nope")).json()["status"] == 404


# --- history from PostgreSQL -----------------------------------------------------------------


async def test_history_lists_and_searches_finished_jobs(logged_app: Engine) -> None:
    app = logged_app
    broken = {"on": False}
    tasks = register(app, broken)
    async with app, client(create_app(app)) as c, worker_running(app):
        done = await tasks["charge"].enqueue(1, note="kiwi")
        assert await done.result(timeout=10) == "charged 1"
        broken["on"] = True
        failed = await tasks["charge"].enqueue(2, note="mango")
        with pytest.raises(Exception, match="declined"):
            await failed.result(timeout=10)

        async def shipped() -> bool:
            page = (await c.get("/api/jobs", params={"status": "completed", "search": "kiwi"})).json()
            return [j["id"] for j in page["jobs"]] == [done.id]

        await eventually(shipped, timeout=15, what="completed job in the history")
        await eventually(lambda: _history_has(c, "mango", failed.id), timeout=15, what="failed job shipped")
        found = (await c.get("/api/jobs", params={"search": "mango"})).json()
        assert found["source"] == "history" and found["notice"] is None
        page = await c.get("/queues/default", params={"status": "completed"})
        assert done.id in page.text and "enable the job log" not in page.text

        # Gone from Redis (its result_ttl ran out): the job page reads the history. (A delete
        # removes the PostgreSQL rows too, so this expires the keys as retention does.)
        gateway = app.gateway
        qk = gateway.keys.queue("default")
        await gateway.redis.delete(qk.job(done.id), qk.logs(done.id))
        detail = (await c.get(f"/api/jobs/{done.id}")).json()
        assert (detail["source"], detail["status"], detail["result"]) == ("history", "completed", "charged 1")
        assert detail["logs"][0]["message"] == "charging order 1 (kiwi)"
        assert detail["actions"] == {"retry": False, "cancel": False, "delete": False}
        # A failed job's log from PostgreSQL includes the error row of its attempt.
        failed_detail = (await c.get(f"/api/jobs/{failed.id}")).json()
        await eventually(lambda: _error_rows(c, failed.id), timeout=15, what="error row shipped")
        assert failed_detail["status"] == "failed"


async def _history_has(c: httpx.AsyncClient, word: str, job_id: str) -> bool:
    page = (await c.get("/api/jobs", params={"search": word})).json()
    return any(j["id"] == job_id for j in page["jobs"]) and page["source"] == "history"


async def _error_rows(c: httpx.AsyncClient, job_id: str) -> bool:
    logs = (await c.get(f"/api/jobs/{job_id}")).json()["logs"]
    return any(line["level"] == "error" and "UnrecoverableError" in line["message"] for line in logs)


async def test_postgres_down_falls_back_to_live_jobs(redis_url: str, namespace: str) -> None:
    from engine.embedded import free_port

    app = Engine(
        redis_url, database_url=f"postgresql://engine@127.0.0.1:{free_port()}/nope", namespace=namespace
    )
    tasks = register(app, {"on": True})
    try:
        async with app, client(create_app(app)) as c:
            job = await tasks["charge"].enqueue(9, note="durian")
            async with worker_running(app, shipper=False):
                with pytest.raises(Exception, match="declined"):
                    await job.result(timeout=10)
            found = (await c.get("/api/jobs", params={"search": "durian"})).json()
            assert [j["id"] for j in found["jobs"]] == [job.id] and found["source"] == "redis"
            assert "the job log is unavailable (ConnectionFailed" in found["notice"]
            detail = (await c.get(f"/api/jobs/{job.id}")).json()
            assert (
                detail["status"] == "failed" and detail["logs"][0]["message"] == "charging order 9 (durian)"
            )
            completed = (await c.get("/api/jobs", params={"status": "completed"})).json()
            assert completed["jobs"] == [] and "unavailable" in completed["notice"]
    finally:
        await app.close()


# --- command line ----------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.dashboard", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_refuses_a_public_address_without_auth(redis_url: str) -> None:
    env = {"ENGINE_REDIS_URL": redis_url, "ENGINE_DASHBOARD_TOKEN": ""}
    refused = run_cli("tests.apps.counting:app", "--host", "0.0.0.0", "--port", "1", env=env)
    assert refused.returncode == 2 and "refusing to serve the dashboard on 0.0.0.0" in refused.stderr
    assert "Traceback" not in refused.stderr
    bad_app = run_cli("tests.apps.nope:app", env=env)
    assert bad_app.returncode == 2 and "cannot import module" in bad_app.stderr
    help_text = run_cli("--help")
    assert (
        help_text.returncode == 0 and "--insecure" in help_text.stdout and "--read-only" in help_text.stdout
    )


async def test_cli_serves_the_dashboard(redis_url: str, namespace: str, tmp_path: Path) -> None:
    from engine.embedded import free_port

    port = free_port()
    output = tmp_path / "dashboard.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ENGINE_REDIS_URL": redis_url,
        "ENGINE_NAMESPACE": namespace,
        "ENGINE_DASHBOARD_TOKEN": TOKEN,
    }
    command = [sys.executable, "-m", "engine.dashboard", "tests.apps.counting:app", "--port", str(port)]
    with output.open("wb") as sink:
        proc = await anyio.open_process(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:

                async def up() -> bool:
                    try:
                        return (await c.get("/api/queues")).status_code == 401
                    except httpx.TransportError:
                        return False

                await eventually(up, timeout=20, interval=0.1, what="dashboard process listening")
                response = await c.get("/api/queues", headers={"Authorization": f"Bearer {TOKEN}"})
                assert response.status_code == 200 and "queues" in response.json()
        finally:
            proc.terminate()
            with anyio.fail_after(15):
                await proc.wait()
    # uvicorn re-raises the SIGTERM it handled gracefully once it is done (a clean exit for
    # process managers); anything else is a crash.
    assert proc.returncode in (0, -signal.SIGTERM), output.read_text(errors="replace")


async def test_serving_helper_binds_a_free_port(app: Engine) -> None:
    async with serving(create_app(app)) as url, httpx.AsyncClient(base_url=url) as c:
        assert url.startswith("http://127.0.0.1:")
        assert (await c.get("/api/queues")).status_code == 200
