"""The engine embedded in a web service: a worker in the app's lifespan, a route that
enqueues, and the dashboard mounted behind the service's own authentication.

Run it (Redis from ``ENGINE_REDIS_URL``, key prefix from ``ENGINE_NAMESPACE``)::

    export EXAMPLE_API_KEY="$(openssl rand -hex 16)"
    python -m uvicorn examples.fastapi_app:app --port 8000   # or: python -m examples.fastapi_app
    curl -X POST localhost:8000/signups -H "x-api-key: $EXAMPLE_API_KEY" -d '{"email": "ada@example.com"}'
    curl localhost:8000/signups/<id> -H "x-api-key: $EXAMPLE_API_KEY"
    curl localhost:8000/admin/jobs/api/queues -H "x-api-key: $EXAMPLE_API_KEY"   # the dashboard's API

- The lifespan connects the engine, starts a worker as a background task and, on shutdown,
  stops it: it stops fetching and lets running jobs finish within the grace period.
- The worker is created with ``handle_signals`` left to its default (None: detect). Under
  uvicorn, which handles SIGINT and SIGTERM itself, it leaves them alone: Ctrl-C makes
  uvicorn stop serving and run the lifespan shutdown, which stops the worker; the process
  exits 0. (A worker that took the signal itself would stop while uvicorn went on serving.)
- ``dashboard(auth=...)`` is given the service's own check (an API key here; a real service
  would look at its session cookie or ``request.user``): the dashboard answers 401 without it
  and keeps its CSRF check on every change.
- Logging: the engine's records are stdlib records of the loggers ``engine.*``, and the
  engine adds no handler. :data:`LOG_CONFIG` is uvicorn's own log config plus a console
  handler for them (``python -m uvicorn ... --log-config`` takes it as a JSON file).
"""

from __future__ import annotations

import copy
import hmac
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn.config
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from engine import Engine, JobContext, Worker

API_KEY_HEADER = "x-api-key"
QUEUE = "emails"

LOG_CONFIG: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
"""uvicorn's log config, plus the engine's loggers (INFO and up) on stderr, rendered by
:func:`engine.log.formatter` (``"json": True`` for JSON lines)."""
LOG_CONFIG["formatters"]["engine"] = {"()": "engine.log.formatter"}
LOG_CONFIG["handlers"]["engine"] = {
    "class": "logging.StreamHandler",
    "formatter": "engine",
    "stream": "ext://sys.stderr",
}
LOG_CONFIG["loggers"]["engine"] = {"handlers": ["engine"], "level": "INFO"}


class Signup(BaseModel):
    email: str


class Accepted(BaseModel):
    id: str
    status_url: str


class SignupStatus(BaseModel):
    id: str
    status: str
    result: Any = None
    error: str | None = None


def create_app(engine: Engine | None = None, api_key: str | None = None) -> FastAPI:
    """The service. ``engine`` defaults to ``Engine()`` (``ENGINE_REDIS_URL``,
    ``ENGINE_NAMESPACE``), ``api_key`` to ``EXAMPLE_API_KEY`` (else a random one, printed at
    startup)."""
    engine = engine if engine is not None else Engine()
    key = api_key or os.environ.get("EXAMPLE_API_KEY") or ""
    generated = not key
    if generated:
        key = secrets.token_urlsafe(24)

    @engine.task(queue=QUEUE, timeout=30, max_attempts=3)
    async def send_welcome(ctx: JobContext, email: str) -> str:
        await ctx.log(f"sending the welcome email to {email}")
        return f"welcome email sent to {email}"

    # --- the service's own authentication ------------------------------------------------

    def authenticated(request: Request) -> bool:
        """The API key check, used by the routes (a dependency) and, as ``auth=``, by the dashboard."""
        given = request.headers.get(API_KEY_HEADER, "")
        return hmac.compare_digest(given.encode(), key.encode())

    def require_api_key(request: Request) -> None:
        if not authenticated(request):
            raise HTTPException(
                401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "ApiKey"}
            )

    # --- the engine in the lifespan ---------------------------------------------------------

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if generated:
            print(f"EXAMPLE_API_KEY is not set; this run's API key: {key}", file=sys.stderr)
        async with engine:  # connects now, closes on shutdown
            # handle_signals left to detection: uvicorn handles SIGINT/SIGTERM, so the worker
            # leaves them to it and is stopped below, by the lifespan shutdown.
            worker = engine.worker(queues=[QUEUE], concurrency=20, grace_period=10)
            app.state.worker = worker
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(worker.run)
                await worker.started.wait()  # serve once the worker is up
                try:
                    yield
                finally:
                    worker.stop()  # running jobs get the grace period; the task group waits

    service = FastAPI(title="signups", lifespan=lifespan)
    protected = [Depends(require_api_key)]

    # --- routes -----------------------------------------------------------------------------

    @service.post("/signups", status_code=202, dependencies=protected)
    async def signup(body: Signup, request: Request, response: Response) -> Accepted:
        if "@" not in body.email:
            raise HTTPException(422, "email: not an email address")
        job = await send_welcome.enqueue(body.email)
        url = str(request.url_for("signup_status", job_id=job.id))
        response.headers["location"] = url
        return Accepted(id=job.id, status_url=url)

    @service.get("/signups/{job_id}", dependencies=protected, response_model=SignupStatus)
    async def signup_status(job_id: str) -> SignupStatus:
        info = await engine.job(job_id).info()
        if info is None:
            raise HTTPException(404, "no such job")
        return SignupStatus(id=info.id, status=info.status, result=info.result, error=info.error)

    @service.get("/health")
    async def health(request: Request) -> JSONResponse:
        worker: Worker | None = getattr(request.app.state, "worker", None)
        running = worker is not None and worker.started.is_set() and not worker.stopped.is_set()
        return JSONResponse(
            {"worker": "running" if running else "stopped"}, status_code=200 if running else 503
        )

    # The dashboard, behind the service's own authentication.
    service.mount("/admin/jobs", engine.dashboard(auth=authenticated))
    return service


app = create_app()
"""What ``python -m uvicorn examples.fastapi_app:app`` serves."""


if __name__ == "__main__":
    uvicorn.run(app, port=int(os.environ.get("PORT", "8000")), log_config=LOG_CONFIG)
