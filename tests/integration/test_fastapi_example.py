"""examples/fastapi_app.py over real HTTP and a real Redis: its route enqueues and its
lifespan worker runs the job, its mounted dashboard takes the service's own credentials, and
under uvicorn Ctrl-C stops the worker through the lifespan shutdown (the worker leaves the
signal to uvicorn) and the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request

from engine import ConfigurationError, Engine, Status
from engine.dashboard.server import serving
from examples.fastapi_app import LOG_CONFIG, create_app
from tests.helpers import ROOT, eventually, free_port, stop_process

KEY = "a-long-api-key-for-the-tests"
HOST_AUTH = {"x-api-key": KEY}


@asynccontextmanager
async def running(redis_url: str, namespace: str) -> AsyncIterator[tuple[httpx.AsyncClient, Engine]]:
    """The example served by uvicorn in this process, its lifespan (and so its worker) on."""
    engine = Engine(redis_url, namespace=namespace)
    service = create_app(engine, api_key=KEY)
    async with (
        service.router.lifespan_context(service),
        serving(service) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client, engine


async def test_the_route_enqueues_and_the_lifespan_worker_runs_the_job(
    redis_url: str, namespace: str
) -> None:
    async with running(redis_url, namespace) as (client, engine):
        assert (await client.get("/health")).json() == {"worker": "running"}
        refused = await client.post("/signups", json={"email": "ada@example.com"})
        assert refused.status_code == 401
        accepted = await client.post("/signups", json={"email": "ada@example.com"}, headers=HOST_AUTH)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        assert accepted.headers["location"] == accepted.json()["status_url"]
        # FastAPI's own request validation and API document, beside the engine's.
        invalid = await client.post("/signups", json={"mail": "ada"}, headers=HOST_AUTH)
        assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "email"]
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert {"/signups", "/signups/{job_id}", "/health"} <= set(paths)

        async def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get(f"/signups/{job_id}", headers=HOST_AUTH)).json()
            return body if body["status"] in ("completed", "failed") else None

        done = await eventually(finished, timeout=15, what="the signup job finished")
        assert done == {
            "id": job_id,
            "status": "completed",
            "result": "welcome email sent to ada@example.com",
            "error": None,
        }
        assert await engine.job(job_id).status() == Status.COMPLETED


async def test_the_mounted_dashboard_takes_the_services_own_credentials(
    redis_url: str, namespace: str
) -> None:
    async with running(redis_url, namespace) as (client, engine):
        for headers in ({}, {"x-api-key": "wrong"}, {"authorization": f"Bearer {KEY}"}):
            refused = await client.get("/admin/jobs/api/queues", headers=headers)
            assert refused.status_code == 401, (headers, refused.text)
            assert "authentication required" in refused.json()["error"]
            page = await client.get("/admin/jobs/", headers={**headers, "accept": "text/html"})
            assert page.status_code == 401  # no login page of its own: the service's auth decides

        queues = await client.get("/admin/jobs/api/queues", headers=HOST_AUTH)
        assert queues.status_code == 200, queues.text
        page = await client.get("/admin/jobs/", headers={**HOST_AUTH, "accept": "text/html"})
        assert page.status_code == 200 and "<html" in page.text.lower()

        # CSRF stays on for changes, also with the service's credentials.
        body = {"task": "send_welcome", "args": ["grace@example.com"]}
        no_csrf = await client.post("/admin/jobs/api/jobs", json=body, headers=HOST_AUTH)
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["error"]
        csrf = (await client.get("/admin/jobs/api/csrf", headers=HOST_AUTH)).json()
        created = await client.post(
            "/admin/jobs/api/jobs", json=body, headers={**HOST_AUTH, csrf["header"]: csrf["csrf_token"]}
        )
        assert created.status_code == 201, created.text
        job = engine.job(created.json()["id"])
        assert await job.result(timeout=15) == "welcome email sent to grace@example.com"


async def test_the_auth_hook_may_be_async_or_raise_and_metrics_keeps_its_token(
    redis_url: str, namespace: str
) -> None:
    seen: list[str] = []

    async def auth(request: Request) -> bool:  # an async hook, given the Starlette request
        seen.append(request.url.path)
        if request.headers.get("x-role") == "intern":
            raise HTTPException(403, "interns may not see the jobs", headers={"x-why": "role"})
        return request.cookies.get("host_session") == "valid"

    with pytest.raises(ConfigurationError, match="one or the other"):
        Engine(redis_url, namespace=namespace).dashboard(auth=auth, token="t" * 16)
    with pytest.raises(ConfigurationError, match="callable"):
        Engine(redis_url, namespace=namespace).dashboard(auth="yes")
    engine = Engine(redis_url, namespace=namespace)
    dashboard = engine.dashboard(auth=auth, metrics_token="m" * 16)
    async with engine, serving(dashboard) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        assert (await client.get("/api/queues")).status_code == 401
        forbidden = await client.get(
            "/api/queues", headers={"x-role": "intern", "cookie": "host_session=valid"}
        )
        assert forbidden.status_code == 403 and forbidden.headers["x-why"] == "role"
        assert forbidden.json()["error"] == "interns may not see the jobs"
        assert (await client.get("/api/queues", headers={"cookie": "host_session=valid"})).status_code == 200
        assert seen[-1] == "/api/queues"
        # Prometheus has no host session: /metrics still takes its own token (or the host's auth).
        assert (
            await client.get("/metrics", headers={"authorization": "Bearer " + "m" * 16})
        ).status_code == 200
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"cookie": "host_session=valid"})).status_code == 200
        assert (await client.get("/static/app.css")).status_code == 200  # assets: no hook
        assert "/static/app.css" not in seen


def test_processes_sharing_a_csrf_secret_accept_each_others_csrf_tokens() -> None:
    from engine.dashboard.auth import Security

    def allow(request: Request) -> bool:
        return True

    one, other = (Security(auth=allow, csrf_secret="s" * 16) for _ in range(2))
    assert other.check_csrf(one.new_csrf("host"), "host")
    # Without it each process signs with a key of its own.
    assert not Security(auth=allow).check_csrf(Security(auth=allow).new_csrf("host"), "host")


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str
    output: Path


@pytest.fixture
def uvicorn_service(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Service]:
    """``python -m uvicorn examples.fastapi_app:app`` in a subprocess, with the example's
    LOG_CONFIG (the engine's records on stderr) and its output in a file."""
    port = free_port()
    log_config = tmp_path / "log.json"
    log_config.write_text(json.dumps(LOG_CONFIG))
    output = tmp_path / "uvicorn.log"
    env = {
        **os.environ,
        "ENGINE_REDIS_URL": redis_url,
        "ENGINE_NAMESPACE": namespace,
        "EXAMPLE_API_KEY": KEY,
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", str(port)]
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--log-config", str(log_config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Service(proc, f"http://127.0.0.1:{port}", output)
    finally:
        stop_process(proc)


async def test_ctrl_c_under_uvicorn_stops_the_worker_and_exits_0(uvicorn_service: Service) -> None:
    proc, output = uvicorn_service.proc, uvicorn_service.output
    async with httpx.AsyncClient(base_url=uvicorn_service.url, timeout=5) as client:

        async def up() -> bool:
            try:
                return (await client.get("/health")).status_code == 200
            except httpx.TransportError:
                return proc.poll() is not None  # it died: stop waiting, the asserts say why

        await eventually(up, timeout=30, interval=0.1, what="the service and its worker up")
        assert proc.poll() is None, output.read_text()
        accepted = await client.post("/signups", json={"email": "ada@example.com"}, headers=HOST_AUTH)
        assert accepted.status_code == 202, accepted.text

        async def done() -> bool:
            reply = await client.get(accepted.json()["status_url"], headers=HOST_AUTH)
            return bool(reply.json()["status"] == "completed")

        await eventually(done, timeout=15, what="the job run by the service's worker")

    proc.send_signal(signal.SIGINT)

    async def exited() -> bool:
        return proc.poll() is not None

    await eventually(exited, timeout=10, interval=0.05, what="uvicorn exited after SIGINT")
    log = output.read_text()
    assert proc.returncode == 0, log
    assert "Application shutdown complete" in log, log  # uvicorn ran the lifespan shutdown...
    assert "worker stopped" in log, log  # ...which stopped the worker
    assert "signal received" not in log, log  # the worker left the signal to uvicorn


OWN_PROCESS = """
import asyncio, os, sys
import anyio
from engine import Engine

app = Engine(os.environ["ENGINE_REDIS_URL"], namespace=os.environ["ENGINE_NAMESPACE"])

@app.task(queue="own", timeout=5)
async def noop(ctx) -> None:
    return None

async def main() -> None:
    async with app:
        worker = app.worker(queues=["own"], cron=False)  # handle_signals left to detection
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await worker.started.wait()
            print("ready", flush=True)
    print("stopped gracefully", flush=True)

asyncio.run(main()) if sys.argv[1] == "asyncio.run" else anyio.run(main)
"""


@pytest.fixture
def own_process(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Callable[[str], Service]]:
    """Starts OWN_PROCESS under a runner, its output in a file; stops what it started."""
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "ENGINE_REDIS_URL": redis_url,
        "ENGINE_NAMESPACE": namespace,
        "PYTHONPATH": str(ROOT),
    }

    def start(runner: str) -> Service:
        output = tmp_path / "out.log"
        # As started from a terminal: a suite run in the background (`./.ci/run &`) ignores
        # SIGINT, the child would inherit that, and an ignored SIGINT rightly stays ignored.
        inherited = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with output.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-c", OWN_PROCESS, runner],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        finally:
            if inherited is not None:  # None: not set from Python, nothing to put back
                signal.signal(signal.SIGINT, inherited)
        started.append(proc)
        return Service(proc, "", output)

    try:
        yield start
    finally:
        for proc in started:
            stop_process(proc)


@pytest.mark.parametrize(
    ("runner", "signum"),
    [("asyncio.run", signal.SIGINT), ("anyio.run", signal.SIGINT), ("asyncio.run", signal.SIGTERM)],
)
async def test_a_worker_that_owns_its_process_still_takes_the_signals(
    own_process: Callable[[str], Service], runner: str, signum: signal.Signals
) -> None:
    # Nothing else handles them here (asyncio.run's own SIGINT handler is Python's default,
    # translated): the detected default takes them and stops gracefully, exit 0.
    service = own_process(runner)
    proc, output = service.proc, service.output

    async def ready() -> bool:
        return "ready" in output.read_text() or proc.poll() is not None

    await eventually(ready, timeout=30, what="the worker started")
    assert proc.poll() is None, output.read_text()
    proc.send_signal(signum)

    async def exited() -> bool:
        return proc.poll() is not None

    await eventually(exited, timeout=15, what=f"the worker process exited after {signum.name}")
    assert proc.returncode == 0, output.read_text()
    assert output.read_text().splitlines()[-1] == "stopped gracefully", output.read_text()


def test_the_signal_detection_rule() -> None:
    from engine.worker.os_signals import unclaimed_signals

    both = (signal.SIGTERM, signal.SIGINT)
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert unclaimed_signals() == both
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ignored by the parent: stays ignored
        assert unclaimed_signals() == (signal.SIGTERM,)
        signal.signal(signal.SIGINT, lambda signum, frame: None)  # the host's handler
        assert unclaimed_signals() == ()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        assert unclaimed_signals() == ()
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
