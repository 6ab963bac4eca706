"""The JSON API under ``/api`` (described by ``/api/openapi.json``)."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine import inspector
from engine.dashboard import actions, checks
from engine.dashboard import overview as figures
from engine.dashboard import search as lookup
from engine.dashboard.detail import job_detail
from engine.dashboard.errors import Invalid
from engine.dashboard.openapi import openapi_document
from engine.dashboard.web import JSON, engine_of, error_json, json_body


def _base(request: Request) -> str:
    base: str = request.scope["state"].get("base", "")
    return base


def _query(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value not in (None, "") else None


def _minutes(request: Request) -> int:
    raw = request.query_params.get("minutes", "60")
    # ASCII digits only: str.isdigit() accepts '²', which int() refuses.
    if not re.fullmatch(r"[0-9]{1,3}", raw, re.ASCII) or not 1 <= int(raw) <= 120:
        raise Invalid(f"minutes must be an integer from 1 to 120, not {raw[:40]!r}")
    return int(raw)


async def index(request: Request) -> Response:
    base = _base(request)
    return JSON(
        {
            "openapi": f"{base}/api/openapi.json",
            "endpoints": sorted(openapi_document(base)["paths"]),
        }
    )


async def openapi(request: Request) -> Response:
    return JSON(openapi_document(_base(request)))


async def csrf(request: Request) -> Response:
    token = request.scope["state"]["csrf_token"]
    return JSON({"csrf_token": token, "header": "X-CSRF-Token"})


async def overview(request: Request) -> Response:
    return JSON(await figures.overview(engine_of(request)))


async def queues(request: Request) -> Response:
    return JSON({"queues": await figures.queue_summaries(engine_of(request))})


async def queue_detail(request: Request) -> Response:
    engine = engine_of(request)
    name = await checks.require_queue(engine, request.path_params["queue"])
    summary = await figures.queue_summary(engine, name)
    return JSON({**summary, "throughput": await figures.throughput(engine, [name], _minutes(request))})


async def throughput(request: Request) -> Response:
    engine = engine_of(request)
    queue = _query(request, "queue")
    names = [await checks.require_queue(engine, queue)] if queue else await inspector.queue_names(engine)
    return JSON({"queues": names, "minutes": await figures.throughput(engine, names, _minutes(request))})


async def list_jobs(request: Request) -> Response:
    page = await lookup.list_jobs(
        engine_of(request),
        queue=_query(request, "queue"),
        status=_query(request, "status"),
        task=_query(request, "task"),
        search=_query(request, "search") or _query(request, "q"),
        limit=checks.check_limit(_query(request, "limit")),
        cursor=_query(request, "cursor"),
    )
    return JSON(page.as_dict())


async def enqueue(request: Request) -> Response:
    created = await actions.enqueue(engine_of(request), await json_body(request))
    location = f"{_base(request)}/api/jobs/{created['id']}"
    return JSON(created, status_code=201, headers={"location": location})


async def job(request: Request) -> Response:
    return JSON(await job_detail(engine_of(request), request.path_params["job_id"]))


async def job_raw(request: Request) -> Response:
    """Everything about the job, in full, as a JSON file (the page shows a bounded part)."""
    detail = await job_detail(engine_of(request), request.path_params["job_id"])
    filename = f"job-{detail['id']}.json"
    return JSON(detail, headers={"content-disposition": f'attachment; filename="{filename}"'})


async def job_logs(request: Request) -> Response:
    detail = await job_detail(engine_of(request), request.path_params["job_id"])
    return JSON({"id": detail["id"], "logs": detail["logs"]})


async def retry(request: Request) -> Response:
    return JSON(await actions.retry_job(engine_of(request), request.path_params["job_id"]))


async def cancel(request: Request) -> Response:
    return JSON(await actions.cancel_job(engine_of(request), request.path_params["job_id"]))


async def delete(request: Request) -> Response:
    return JSON(await actions.delete_job(engine_of(request), request.path_params["job_id"]))


async def dead_letters(request: Request) -> Response:
    engine = engine_of(request)
    queue = await checks.require_queue(engine, request.path_params["queue"])
    task = checks.check_task(_query(request, "task"))
    search = checks.check_search(_query(request, "search"))
    limit = checks.check_limit(_query(request, "limit"))
    page = await lookup.dead_letters(
        engine, queue, task, search, limit=limit, cursor=_query(request, "cursor")
    )
    return JSON({**page.as_dict(), "count": await engine.dlq(queue).count()})


def _object(body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """The body as an object with only ``allowed`` fields: a misspelt filter must not turn
    a bulk action on a few jobs into one on all of them."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)[:200]}; allowed: {', '.join(sorted(allowed))}")
    return body


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"field {name!r} must be a string")
    return value or None


async def replay(request: Request) -> Response:
    # Everything is checked before anything is replayed.
    engine = engine_of(request)
    body = _object(await json_body(request), frozenset({"ids", "all", "task", "search"}))
    queue = request.path_params["queue"]
    ids = body.get("ids")
    everything = body.get("all", False)
    if not isinstance(everything, bool):
        raise Invalid("field 'all' must be true or false")
    task, search = _optional_text(body, "task"), _optional_text(body, "search")
    if everything:
        if ids:
            raise Invalid("give either 'ids' or 'all': true, not both")
        return JSON(await actions.replay_matching(engine, queue, task, search))
    if task is not None or search is not None:
        raise Invalid("'task' and 'search' filter 'all': true; with 'ids' leave them out")
    return JSON(await actions.replay_jobs(engine, queue, checks.check_job_ids(ids)))


async def purge(request: Request) -> Response:
    body = _object(await json_body(request), frozenset({"task", "search"}))
    return JSON(
        await actions.purge_dead(
            engine_of(request),
            request.path_params["queue"],
            _optional_text(body, "task"),
            _optional_text(body, "search"),
        )
    )


async def workers(request: Request) -> Response:
    return JSON({"workers": await figures.workers(engine_of(request))})


async def cron(request: Request) -> Response:
    return JSON({"schedules": await figures.cron(engine_of(request))})


async def tasks(request: Request) -> Response:
    return JSON({"tasks": await figures.tasks(engine_of(request))})


async def not_found(request: Request) -> Response:
    return error_json(404, f"no API endpoint {request.method} {request.url.path} (see /api/openapi.json)")


def routes() -> list[BaseRoute]:
    return [
        Route("/", index),
        Route("/openapi.json", openapi),
        Route("/csrf", csrf),
        Route("/overview", overview),
        Route("/queues", queues),
        Route("/queues/{queue}", queue_detail),
        Route("/queues/{queue}/dlq", dead_letters),
        Route("/queues/{queue}/dlq/replay", replay, methods=["POST"]),
        Route("/queues/{queue}/dlq/purge", purge, methods=["POST"]),
        Route("/throughput", throughput),
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/jobs", enqueue, methods=["POST"]),
        Route("/jobs/{job_id}", job, methods=["GET"]),
        Route("/jobs/{job_id}", delete, methods=["DELETE"]),
        Route("/jobs/{job_id}/logs", job_logs),
        Route("/jobs/{job_id}/raw", job_raw),
        Route("/jobs/{job_id}/retry", retry, methods=["POST"]),
        Route("/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/workers", workers),
        Route("/cron", cron),
        Route("/tasks", tasks),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
