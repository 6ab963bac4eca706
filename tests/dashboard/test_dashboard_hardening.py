"""The dashboard's defences, each against the attack or input that used to get through: body
sizes, Host names (DNS rebinding), huge payloads, token guessing, sessions after logout,
CSRF cookie tossing, malformed input, bulk actions, metrics access. Real Redis (and
PostgreSQL where the job log matters), through the real ASGI app, and a real uvicorn server
on a loopback port where what matters is when the server answers."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import msgspec
import pytest

from engine import Engine, JobContext, UnrecoverableError
from engine.core.errors import ConfigurationError
from engine.dashboard import create_app
from engine.dashboard.auth import SESSION_TTL_S, Security
from engine.dashboard.guard import SECURITY_HEADERS
from engine.dashboard.server import serving
from engine.testing import worker_running
from tests.helpers import ROOT

TOKEN = "hardening-token-0123456789"
METRICS_TOKEN = "metrics-only-token-0123456789"


def client(asgi: Any, *, host: str = "localhost", address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=asgi, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}")


def shop(app: Engine) -> None:
    @app.task(timeout=10, max_attempts=1)
    async def charge(ctx: JobContext, order: int, note: str = "") -> str:
        await ctx.log(f"charging order {order}")
        raise UnrecoverableError(f"order {order}: card declined")

    @app.task(timeout=10)
    async def resize(ctx: JobContext, image: Any = None) -> int:
        return 1


async def csrf_of(c: httpx.AsyncClient, **kwargs: Any) -> dict[str, str]:
    response = await c.get("/api/csrf", **kwargs)
    assert response.status_code == 200, response.text
    return {"X-CSRF-Token": response.json()["csrf_token"]}


async def login(c: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = await c.get("/login")
    assert form.status_code == 200
    return await c.post("/login", data={"token": token, "csrf_token": c.cookies["engine_csrf"], "next": "/"})


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS:
        assert response.headers.get(name) == value, (response.status_code, name, response.headers)


# --- 1. body limits, enforced while the body arrives -----------------------------------------


async def _answer_to(url: str, head: bytes, body: bytes = b"", timeout: float = 5.0) -> tuple[int, bytes]:
    """Send a request head (and part of a body) on a raw connection, never finishing the
    body, and return the status and body of the server's answer. A server that waits for
    the whole body before refusing it never answers: that fails here."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    async with await anyio.connect_tcp(parts.hostname, parts.port) as stream:
        await stream.send(head)
        if body:
            await stream.send(body)
        data = b""
        with anyio.fail_after(timeout):
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head_part, _, rest = data.partition(b"\r\n\r\n")
            lines = head_part.split(b"\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in lines
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(rest) < length:
                rest += await stream.receive()
    return int(lines[0].split()[1]), rest


def _head(method: str, path: str, host: str, extra: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def _chunked(size: int, piece: int = 8192) -> bytes:
    out = b""
    for _ in range(size // piece):
        out += f"{piece:x}\r\n".encode() + b"x" * piece + b"\r\n"
    return out


async def test_oversized_bodies_are_refused_before_they_are_read(app: Engine) -> None:
    shop(app)
    async with app, serving(create_app(app, token=TOKEN)) as url:
        host = urlsplit(url).netloc
        form = "Content-Type: application/x-www-form-urlencoded\r\n"
        for path in ("/login", "/logout"):
            # A declared 400 MB body: refused from Content-Length, nothing of it read.
            status, body = await _answer_to(
                url, _head("POST", path, host, form + "Content-Length: 400000000\r\n")
            )
            assert status == 413 and b"too large" in body, (path, body)
            # No length given: the chunks are counted as they arrive; 24 KB of a body that
            # never ends is enough to be refused (just past the limit, so that the server has
            # read all that was sent when it answers).
            status, body = await _answer_to(
                url, _head("POST", path, host, form + "Transfer-Encoding: chunked\r\n"), _chunked(24 * 1024)
            )
            assert status == 413 and b"too large" in body, (path, body)

        auth = f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        status, body = await _answer_to(
            url, _head("POST", "/api/jobs", host, auth + "Content-Length: 400000000\r\n")
        )
        assert status == 413 and json.loads(body)["status"] == 413
        status, body = await _answer_to(
            url,
            _head("POST", "/api/jobs", host, auth + "Transfer-Encoding: chunked\r\n"),
            _chunked(2 * 1024 * 1024 + 8192),
        )
        assert status == 413 and "too large" in json.loads(body)["error"]
        # And the server is still fine.
        async with httpx.AsyncClient(base_url=url) as c:
            assert (
                await c.get("/api/queues", headers={"Authorization": f"Bearer {TOKEN}"})
            ).status_code == 200


async def test_a_complete_oversized_api_body_is_413_not_400(app: Engine) -> None:
    shop(app)
    async with app, client(create_app(app)) as c:
        csrf = await csrf_of(c)
        big = b'{"task": "resize", "args": ["' + b"x" * (3 * 1024 * 1024) + b'"]}'
        response = await c.post("/api/jobs", content=big, headers=csrf)
        assert response.status_code == 413 and "too large" in response.json()["error"]
        assert_security_headers(response)
        # Under the limit, a body the engine refuses is still its 422.
        response = await c.post("/api/jobs", json={"task": "resize", "args": ["x" * 1_100_000]}, headers=csrf)
        assert response.status_code == 422
        assert (await app.stats())["default"]["waiting"] == 0


# --- 2. Host names: DNS rebinding --------------------------------------------------------------


async def test_an_open_dashboard_answers_only_to_loopback_host_names(app: Engine) -> None:
    shop(app)
    asgi = create_app(app)
    async with app:
        async with client(asgi, host="rebind.attacker.example") as evil:
            refused = await evil.get("/api/csrf")
            assert refused.status_code == 403
            assert "'rebind.attacker.example' is not allowed" in refused.json()["error"]
            assert "loopback" in refused.json()["error"] and "--allowed-host" in refused.json()["error"]
            assert "set-cookie" not in refused.headers
            assert_security_headers(refused)
            posted = await evil.post("/api/jobs", json={"task": "resize"}, headers={"X-CSRF-Token": "x" * 40})
            assert posted.status_code == 403
            assert (await evil.get("/")).status_code == 403
        assert (await app.stats())["default"]["waiting"] == 0
        for host in (
            "localhost",
            "localhost:8080",
            "127.0.0.1:9",
            "[::1]:8080",
            "app.localhost",
            "LOCALHOST.",
        ):
            async with client(asgi, host=host) as c:
                assert (await c.get("/api/csrf")).status_code == 200, host
        for host in ("127.0.0.1.attacker.example", "localhost.attacker.example", "[::2]", "10.0.0.5"):
            async with client(asgi, host=host) as c:
                assert (await c.get("/api/csrf")).status_code == 403, host


async def test_allowed_hosts_from_the_option_and_the_environment(
    app: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop(app)
    async with app:
        listed = create_app(app, allowed_hosts=["jobs.example.com", "*.corp.example", "10.0.0.5"])
        for host, status in [
            ("jobs.example.com", 200),
            ("JOBS.example.com:443", 200),
            ("corp.example", 200),
            ("ops.corp.example", 200),
            ("10.0.0.5:8080", 200),
            ("localhost", 200),
            ("example.com", 403),
            ("evilcorp.example", 403),
        ]:
            async with client(listed, host=host) as c:
                assert (await c.get("/api/queues")).status_code == status, host

        monkeypatch.setenv("ENGINE_DASHBOARD_ALLOWED_HOSTS", "a.example, b.example")
        from_env = create_app(app)
        async with client(from_env, host="b.example") as c:
            assert (await c.get("/api/queues")).status_code == 200
        async with client(from_env, host="c.example") as c:
            response = await c.get("/api/queues")
            assert response.status_code == 403 and "a.example, b.example" in response.json()["error"]
        monkeypatch.delenv("ENGINE_DASHBOARD_ALLOWED_HOSTS")

        # With authentication a re-bound name brings no credentials: any host, unless listed.
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with client(create_app(app, token=TOKEN), host="jobs.internal") as c:
            assert (await c.get("/api/queues", headers=bearer)).status_code == 200
        async with client(
            create_app(app, token=TOKEN, allowed_hosts="jobs.example.com"), host="x.example"
        ) as c:
            assert (await c.get("/api/queues", headers=bearer)).status_code == 403

        for bad in (["http://jobs.example.com"], ["jobs.example.com:8080"], ["*.*.example"], ["a b"], [5]):
            with pytest.raises(ConfigurationError, match="allowed host"):
                create_app(app, allowed_hosts=bad)  # type: ignore[arg-type]


# --- 3. huge payloads: a bounded page, the full data one click away ----------------------------


def _nested(depth: int, width: int) -> list[Any]:
    top: list[Any] = []
    level = top
    for i in range(depth):
        inner: list[Any] = [f"v{i}"] * width
        level.append(inner)
        level = inner
    return top


async def test_a_huge_nested_payload_renders_a_bounded_page(app: Engine) -> None:
    shop(app)
    payload = {"args": [_nested(400, 60)], "kwargs": {"note": "n" * 200_000}}
    raw = msgspec.json.encode(payload)
    assert len(raw) > 100_000 and len(json.dumps(payload, indent=2)) > 10_000_000
    async with app, client(create_app(app)) as c:
        job = await app.tasks["resize"].with_options(delay=3600).enqueue()
        gateway = app.gateway
        await gateway.redis.hset(gateway.keys.queue("default").job(job.id), "payload", raw)

        started = time.monotonic()
        page = await c.get(f"/jobs/{job.id}")
        elapsed = time.monotonic() - started
        assert page.status_code == 200
        assert len(page.content) < 400_000, len(page.content)
        assert elapsed < 2.0, elapsed  # it took 3.4 s (and 100 MB) to render the whole of it
        assert "download the full job as JSON" in page.text
        assert f'href="/api/jobs/{job.id}/raw"' in page.text

        full = await c.get(f"/api/jobs/{job.id}/raw")
        assert full.status_code == 200
        assert f'filename="job-{job.id}.json"' in full.headers["content-disposition"]
        assert full.json()["args"] == payload["args"] and full.json()["kwargs"] == payload["kwargs"]

        # A small job shows everything, and no notice.
        small = await app.tasks["resize"].enqueue({"a": [1, 2]})
        page = await c.get(f"/jobs/{small.id}")
        assert "download the full job" not in page.text and "&#34;a&#34;: [" in page.text


async def test_garbage_in_redis_renders_as_text(app: Engine) -> None:
    """A job hash, log list or dead letter someone wrote by hand (or that a lenient decoder
    turned into escapes) is shown as it is, never a 500."""
    shop(app)
    async with app, client(create_app(app)) as c:
        job = await app.tasks["resize"].with_options(delay=3600).enqueue()
        gateway = app.gateway
        qk = gateway.keys.queue("default")
        await gateway.redis.hset(
            qk.job(job.id),
            mapping={
                "status": "\\xff<b>odd</b>",
                "attempts": "²",
                "max_attempts": "9" * 5000,
                "created": "9" * 30,
                "processed": "-5",
                "progress": "inf",
                "replayed": "²",
                "payload": "\\xff{not json <script>",
                "result": "{nope",
                "error": "<img src=x onerror=alert(1)>",
            },
        )
        await gateway.redis.rpush(qk.logs(job.id), "\\xff not json", "[1, 2]", '{"at": 1e300, "message": 5}')
        page = await c.get(f"/jobs/{job.id}")
        assert page.status_code == 200, page.text[:300]
        assert "\\xff{not json &lt;script&gt;" in page.text and "<script>" not in page.text
        assert "&lt;img src=x" in page.text and "\\xff not json" in page.text
        detail = await c.get(f"/api/jobs/{job.id}")
        assert detail.status_code == 200 and isinstance(detail.json()["status"], str)

        # A dead letter with garbage fields and no job data, a poison stream entry.
        await gateway.redis.xadd(qk.dlq, {"j": "01GARBAGE", "attempts": "²", "at": "²", "error": "\\xff"})
        await gateway.redis.xadd(qk.stream, {"j": "\\xff\\xfe", "garbage": "1"})
        for path in ("/dlq", "/queues/default", "/search?q=xff", "/api/queues/default/dlq", "/api/jobs"):
            response = await c.get(path)
            assert response.status_code == 200, (path, response.text[:300])
        assert "01GARBAGE" in (await c.get("/dlq")).text


# --- 4. guessing tokens: throttled per address; short tokens refused --------------------------


async def test_wrong_tokens_are_throttled_per_address(app: Engine) -> None:
    shop(app)
    asgi = create_app(app, token=TOKEN, basic_auth=("admin", "basic-password-0123456789"))
    # The dashboard's own throttle, on a clock the test moves (no waiting for lockouts).
    now = [1000.0]
    asgi.security.throttle.clock = lambda: now[0]  # type: ignore[attr-defined]
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    right = {"Authorization": f"Bearer {TOKEN}"}
    basic = {"Authorization": "Basic " + base64.b64encode(b"admin:basic-password-0123456789").decode()}
    async with (
        app,
        client(asgi, address="203.0.113.7") as guesser,
        client(asgi, address="198.51.100.2") as other,
    ):
        for _ in range(5):
            assert (await guesser.get("/api/queues", headers=wrong)).status_code == 401
        locked = await guesser.get("/api/queues", headers=right)  # even the right one: no oracle
        assert locked.status_code == 429 and locked.headers["retry-after"] == "1"
        assert "too many failed attempts" in locked.json()["error"]
        assert_security_headers(locked)
        assert (await guesser.get("/api/queues", headers=basic)).status_code == 429

        # Another address is not affected, and its successful login resets nobody else's count.
        assert (await other.get("/api/queues", headers=right)).status_code == 200
        assert (await login(other)).status_code == 303
        await guesser.get("/login")  # a CSRF cookie for the form
        form = await guesser.post(
            "/login", data={"token": TOKEN, "csrf_token": guesser.cookies["engine_csrf"], "next": "/"}
        )
        assert form.status_code == 429 and "Too many wrong tokens" in form.text
        assert form.headers["retry-after"] == "1" and "engine_session" not in form.headers.get(
            "set-cookie", ""
        )

        # The lockout ends; each further failure locks for twice as long.
        now[0] += 1.0
        assert (await guesser.get("/api/queues", headers=wrong)).status_code == 401
        assert (await guesser.get("/api/queues", headers=right)).headers["retry-after"] == "2"
        now[0] += 2.0
        assert (await guesser.get("/api/queues", headers=wrong)).status_code == 401
        assert (await guesser.get("/api/queues", headers=right)).headers["retry-after"] == "4"
        # A success clears the address's own count (a user who mistyped and then got it right).
        now[0] += 4.0
        assert (await guesser.get("/api/queues", headers=basic)).status_code == 200
        for _ in range(4):
            assert (await guesser.get("/api/queues", headers=wrong)).status_code == 401
        assert (await guesser.get("/api/queues", headers=right)).status_code == 200

        # The login form counts too (from a third address).
        async with client(asgi, address="192.0.2.9") as third:
            await third.get("/login")
            for _ in range(5):
                response = await third.post(
                    "/login", data={"token": "wrong", "csrf_token": third.cookies["engine_csrf"], "next": "/"}
                )
                assert response.status_code == 401
            response = await third.post(
                "/login", data={"token": TOKEN, "csrf_token": third.cookies["engine_csrf"], "next": "/"}
            )
            assert response.status_code == 429 and response.headers["retry-after"] == "1"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.dashboard", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_short_tokens_and_passwords_are_refused(app: Engine) -> None:
    for kwargs, message in [
        ({"token": "s3cret"}, "dashboard token is too short (6 characters): use at least 16"),
        ({"token": "   "}, "non-empty"),
        ({"basic_auth": ("admin", "short-pass")}, "basic auth password is too short"),
        ({"token": TOKEN, "metrics_token": "tiny"}, "metrics token is too short"),
        ({"metrics_token": METRICS_TOKEN}, "protects nothing"),
    ]:
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            create_app(app, **kwargs)


def test_the_cli_refuses_a_short_token_in_one_line(redis_url: str) -> None:
    for env, args, message in [
        ({"ENGINE_DASHBOARD_TOKEN": "short"}, (), "dashboard token is too short"),
        ({"ENGINE_DASHBOARD_TOKEN": ""}, ("--basic-auth", "admin:short"), "basic auth password is too short"),
        ({"ENGINE_DASHBOARD_TOKEN": TOKEN}, ("--metrics-token", "tiny"), "metrics token is too short"),
        ({"ENGINE_DASHBOARD_TOKEN": ""}, ("--allowed-host", "http://x"), "invalid allowed host"),
    ]:
        done = run_cli("tests.apps.counting:app", *args, env={"ENGINE_REDIS_URL": redis_url, **env})
        assert done.returncode == 2, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr


# --- 5. logout revokes the session, in every process ------------------------------------------


async def test_logout_revokes_the_session_everywhere(app: Engine, redis_url: str) -> None:
    shop(app)
    other_process = Engine(redis_url, namespace=app.namespace)
    try:
        async with (
            app,
            client(create_app(app, token=TOKEN)) as c,
            client(create_app(other_process, token=TOKEN)) as elsewhere,
        ):
            assert (await login(c)).status_code == 303
            session = c.cookies["engine_session"]
            cookie = {"Cookie": f"engine_session={session}"}
            assert (await elsewhere.get("/api/queues", headers=cookie)).status_code == 200
            csrf = (await csrf_of(c))["X-CSRF-Token"]
            out = await c.post("/logout", data={"csrf_token": csrf})
            assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
            # The old cookie, replayed: refused here and in the other process.
            async with client(create_app(app, token=TOKEN)) as fresh:
                assert (await fresh.get("/api/queues", headers=cookie)).status_code == 401
            assert (await elsewhere.get("/api/queues", headers=cookie)).status_code == 401
            # The revocation lasts as long as the session would have, no longer.
            gateway = app.gateway
            ttl = await gateway.redis.ttl(gateway.keys.revoked_session(session.split(".")[0]))
            assert SESSION_TTL_S - 60 < ttl <= SESSION_TTL_S + 1
            # A fresh login works again.
            assert (await login(c)).status_code == 303
            assert (await c.get("/api/queues")).status_code == 200
    finally:
        await other_process.close()


# --- 6. CSRF tokens are signed and bound to the session ---------------------------------------


async def test_self_chosen_csrf_pairs_do_not_pass(app: Engine) -> None:
    shop(app)
    chosen = "a-self-chosen-value-of-plenty-characters"
    async with app, client(create_app(app)) as c:
        forged = await c.post(
            "/api/jobs",
            json={"task": "resize"},
            headers={"X-CSRF-Token": chosen, "Cookie": f"engine_csrf={chosen}"},
        )
        assert forged.status_code == 403 and "CSRF" in forged.json()["error"]
        assert (await app.stats())["default"]["waiting"] == 0
        # The pair the server signed passes.
        c.cookies.clear()
        assert (
            await c.post("/api/jobs", json={"task": "resize"}, headers=await csrf_of(c))
        ).status_code == 201


async def test_cookie_tossing_cannot_log_a_user_out(app: Engine) -> None:
    shop(app)
    asgi = create_app(app, token=TOKEN)
    async with app, client(asgi) as victim, client(asgi) as attacker:
        assert (await login(victim)).status_code == 303
        session = victim.cookies["engine_session"]
        # A page on another port of the same host plants its own CSRF cookie and posts the
        # logout form with the same value.
        planted = "planted-by-another-port-0123456789"
        tossed = await victim.post(
            "/logout",
            data={"csrf_token": planted},
            headers={"Cookie": f"engine_session={session}; engine_csrf={planted}"},
        )
        assert tossed.status_code == 403
        # A signed token, but one minted for someone else (the attacker's own visit) fails too.
        await attacker.get("/login")
        foreign = attacker.cookies["engine_csrf"]
        tossed = await victim.post(
            "/logout",
            data={"csrf_token": foreign},
            headers={"Cookie": f"engine_session={session}; engine_csrf={foreign}"},
        )
        assert tossed.status_code == 403
        assert (
            await victim.get("/api/queues", headers={"Cookie": f"engine_session={session}"})
        ).status_code == 200
        # A token minted for another session of the same token does not pass either.
        assert (await login(attacker)).status_code == 303
        other_csrf = (await csrf_of(attacker))["X-CSRF-Token"]
        refused = await victim.post(
            "/api/jobs",
            json={"task": "resize"},
            headers={
                "X-CSRF-Token": other_csrf,
                "Cookie": f"engine_session={session}; engine_csrf={other_csrf}",
            },
        )
        assert refused.status_code == 403


# --- 7. malformed input is a 4xx; every error carries the security headers ---------------------


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode().rstrip("=")


async def test_malformed_input_is_a_4xx_never_a_500(app: Engine) -> None:
    shop(app)
    async with app, client(create_app(app, token=TOKEN)) as c:
        await app.tasks["resize"].with_options(delay=600).enqueue()
        for session in ("²", "9" * 4301 + ".x", "١٢٣٤٥٦٧٨٩٠.x.y", "\x00", "a.b.c.d"):
            cookie = {"Cookie": f"engine_session={session}".encode()}
            response = await c.get("/api/queues", headers=cookie)
            assert response.status_code == 401, session
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for path, params in [
            ("/api/throughput", {"minutes": "²"}),
            ("/api/queues/default", {"minutes": "٣"}),
            ("/api/jobs", {"status": "delayed", "cursor": _cursor(["scan", [0, "abc"]])}),
            ("/api/jobs", {"status": "delayed", "cursor": _cursor(["scan", [0, -1]])}),
            ("/api/jobs", {"status": "delayed", "cursor": _cursor(["scan", [-1, None]])}),
            ("/api/jobs", {"cursor": _cursor(["scan", [0, "99999999999999999999999-0"]])}),
            ("/api/jobs", {"cursor": _cursor(["scan", [True, {}]])}),
            ("/api/jobs", {"cursor": _cursor(["scan", "12"])}),
            ("/api/jobs", {"search": "a\x00b"}),
            ("/api/jobs", {"limit": "²"}),
        ]:
            response = await c.get(path, params=params, headers=bearer)
            assert response.status_code == 422, (path, params, response.text)
        deep = b"[" * 1000 + b"]" * 1000
        for path in ("/api/jobs", "/api/queues/default/dlq/replay", "/api/queues/default/dlq/purge"):
            response = await c.post(path, content=deep, headers=bearer)
            assert response.status_code == 422 and "nested" in response.json()["error"], path


async def test_error_responses_carry_the_security_headers(app: Engine, redis_url: str) -> None:
    class Broken(Engine):
        async def stats(self) -> dict[str, dict[str, int]]:
            raise RuntimeError("a bug")

    broken = Broken(redis_url, namespace=app.namespace)
    shop(app)
    try:
        async with app, client(create_app(app)) as c:
            responses = [
                await c.get("/no/such/page"),
                await c.get("/api/nope"),
                await c.request("PUT", "/", headers=await csrf_of(c)),
                await c.get("/jobs/bad%20id"),
                await c.post("/api/jobs", content=b"x" * (3 * 1024 * 1024), headers=await csrf_of(c)),
                await c.post("/api/jobs", json={}),
            ]
            assert [r.status_code for r in responses] == [404, 404, 405, 422, 413, 403]
            for response in responses:
                assert_security_headers(response)
        transport = httpx.ASGITransport(app=create_app(broken), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            for path in ("/api/queues", "/"):
                crashed = await c.get(path)
                assert crashed.status_code == 500 and "a bug" not in crashed.text
                assert_security_headers(crashed)
            assert (await c.get("/api/queues")).json()["status"] == 500
    finally:
        await broken.close()


# --- 8. bulk actions check everything before doing anything ------------------------------------


async def test_bulk_actions_validate_everything_first(app: Engine) -> None:
    shop(app)
    async with app, client(create_app(app)) as c, worker_running(app):
        jobs = [await app.tasks["charge"].enqueue(i) for i in range(2)]
        for job in jobs:
            with pytest.raises(Exception, match="declined"):
                await job.result(timeout=10)
        csrf = await csrf_of(c)
        for path, body in [
            ("/api/queues/default/dlq/replay", {"ids": [jobs[0].id, 1]}),
            ("/api/queues/default/dlq/replay", {"ids": [jobs[0].id, "bad id"]}),
            ("/api/queues/default/dlq/replay", {"ids": [jobs[0].id], "serch": "x"}),
            ("/api/queues/default/dlq/replay", {"all": True, "serch": "declined"}),
            ("/api/queues/default/dlq/replay", {"all": "yes"}),
            ("/api/queues/default/dlq/replay", {"ids": [jobs[0].id], "task": "charge"}),
            ("/api/queues/default/dlq/purge", {"serch": "declined"}),
            ("/api/queues/default/dlq/purge", {"task": 5}),
        ]:
            response = await c.post(path, json=body, headers=csrf)
            assert response.status_code == 422, (body, response.text)
            assert await app.dlq("default").count() == 2, body
            assert all([(await j.info()).status == "failed" for j in jobs]), body  # type: ignore[union-attr]
        done = await c.post("/api/queues/default/dlq/replay", json={"ids": [jobs[0].id]}, headers=csrf)
        assert done.json()["replayed"] == 1


# --- 9. the confirmations say what is deleted --------------------------------------------------


async def _confirmations(c: httpx.AsyncClient, job_id: str) -> tuple[str, str]:
    job_page = (await c.get(f"/jobs/{job_id}")).text
    dlq_page = (await c.get("/dlq?queue=default")).text
    delete = next(line for line in job_page.splitlines() if 'data-action="DELETE"' in line)
    purge = next(line for line in dlq_page.splitlines() if "Delete every dead letter" in line)
    return delete, purge


async def test_delete_and_purge_say_what_they_delete(app: Engine, logged_app: Engine) -> None:
    for engine, history in ((app, False), (logged_app, True)):
        shop(engine)
        async with engine, client(create_app(engine)) as c, worker_running(engine):
            job = await engine.tasks["charge"].enqueue(1)
            with pytest.raises(Exception, match="declined"):
                await job.result(timeout=10)
            delete, purge = await _confirmations(c, job.id)
            assert "its data and log lines in Redis" in delete and "cannot be undone" in delete
            assert "each job's data and log lines in Redis" in purge and "cannot be undone" in purge
            assert "everything kept about it" not in delete
            for text in (delete, purge):
                assert ("PostgreSQL history row and log rows" in text) is history, text


# --- 10. metrics for scrapers ------------------------------------------------------------------


async def test_a_metrics_token_opens_metrics_only(app: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    shop(app)
    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    async with app:
        async with client(create_app(app, token=TOKEN, metrics_token=METRICS_TOKEN)) as c:
            assert (await c.get("/metrics", headers=scraper)).status_code == 200
            assert (await c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
            assert (await c.get("/metrics")).status_code == 401
            assert (await c.get("/api/queues", headers=scraper)).status_code == 401
            assert (await c.get("/", headers=scraper)).status_code == 401
        monkeypatch.setenv("ENGINE_DASHBOARD_METRICS_TOKEN", METRICS_TOKEN)
        async with client(create_app(app, token=TOKEN)) as c:
            assert (await c.get("/metrics", headers=scraper)).status_code == 200
        monkeypatch.delenv("ENGINE_DASHBOARD_METRICS_TOKEN")
        async with client(create_app(app, token=TOKEN, metrics_public=True)) as c:
            metrics = await c.get("/metrics")
            assert metrics.status_code == 200 and "engine_queue_depth" in metrics.text
            assert (await c.get("/api/queues")).status_code == 401


def test_the_cli_offers_the_new_options() -> None:
    help_text = run_cli("--help").stdout
    for flag in ("--allowed-host", "--metrics-token", "--metrics-public"):
        assert flag in help_text


# --- 11. enqueue bounds are a 422 ---------------------------------------------------------------


async def test_enqueue_out_of_bounds_options_are_422(app: Engine) -> None:
    shop(app)
    async with app, client(create_app(app)) as c:
        csrf = await csrf_of(c)
        for field, value in [("timeout", 1e12), ("max_attempts", 1_000_000), ("delay", 1e12)]:
            response = await c.post("/api/jobs", json={"task": "resize", field: value}, headers=csrf)
            assert response.status_code == 422, (field, response.text)
            assert field in response.json()["error"], (field, response.json())
        assert (await app.stats())["default"]["waiting"] == 0
        assert (await app.stats())["default"]["delayed"] == 0


# --- a session signed with the old scheme, or a signature of another token ----------------------


async def test_sessions_are_bound_to_the_token(app: Engine) -> None:
    mine, theirs = Security(token=TOKEN), Security(token="a-different-token-0123456789")
    async with app, client(create_app(app, token=TOKEN)) as c:
        for value, status in [
            (mine.new_session(), 200),
            (theirs.new_session(), 401),
            (mine.new_session(now=time.time() - SESSION_TTL_S - 5), 401),
            (mine.new_session()[:-2] + "AA", 401),
        ]:
            response = await c.get("/api/queues", headers={"Cookie": f"engine_session={value}"})
            assert response.status_code == status, value
