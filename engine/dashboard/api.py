"""The JSON API under ``/api`` (described by ``/api/openapi.json``).

Every route is an :data:`engine.dashboard.openapi.OPERATIONS` entry: its query string and
body are converted to that entry's Structs (a 422 naming the field otherwise) before the
handler runs, and what the handler returns is encoded through its response Struct, so the
document and the server cannot disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine import inspector
from engine.dashboard import actions, breakdown, checks, decoding, schemas
from engine.dashboard import overview as figures
from engine.dashboard import search as lookup
from engine.dashboard.detail import job_detail
from engine.dashboard.errors import Invalid
from engine.dashboard.openapi import OPERATIONS, PATH_PARAMETERS, Operation, openapi_document
from engine.dashboard.web import JSON, engine_of, error_json, json_body

if TYPE_CHECKING:
    from engine.client.app import Engine

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Call:
    """A request as a handler sees it: the query and body already converted to the
    operation's Structs (None when it takes none)."""

    request: Request
    query: Any
    body: Any

    @property
    def engine(self) -> Engine:
        return engine_of(self.request)

    @property
    def base(self) -> str:
        base: str = self.request.scope["state"].get("base", "")
        return base

    def path(self, name: str) -> str:
        value: str = self.request.path_params[name]
        return value


@dataclass(frozen=True)
class Reply:
    """A response body with headers of its own."""

    body: Any
    headers: dict[str, str] = field(default_factory=dict)


_OPERATIONS = {op.operation_id: op for op in OPERATIONS}
_ENDPOINTS: dict[str, Endpoint] = {}


def handles(operation_id: str) -> Callable[[Callable[[Call], Awaitable[Any]]], Endpoint]:
    """The endpoint serving ``operation_id`` with this handler."""
    op = _OPERATIONS[operation_id]

    def wrap(handler: Callable[[Call], Awaitable[Any]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            result = await handler(await _call(op, request))
            headers = None
            if isinstance(result, Reply):
                result, headers = result.body, result.headers
            return JSON(decoding.shaped(op.response, result), status_code=op.status, headers=headers)

        endpoint.__name__ = endpoint.__qualname__ = handler.__name__
        endpoint.__doc__ = handler.__doc__ or op.summary
        _ENDPOINTS[operation_id] = endpoint
        return endpoint

    return wrap


async def _call(op: Operation, request: Request) -> Call:
    for name, (kind, _) in PATH_PARAMETERS.items():
        if name in request.path_params:
            decoding.checked(kind, request.path_params[name], name.replace("_", " "))
    query = None if op.query is None else decoding.from_query(request.query_params, op.query)
    body = None
    if op.body is not None:
        # An empty body is an empty object: the fields' own defaults and messages apply (a
        # body of JSON null is refused, as any other body that is not an object).
        body = decoding.from_body(await json_body(request, empty={}), op.body)
    return Call(request, query, body)


@handles("index")
async def index(call: Call) -> Any:
    return {
        "openapi": f"{call.base}/api/openapi.json",
        "endpoints": sorted({op.documented_path for op in OPERATIONS}),
    }


@handles("openapi")
async def openapi(call: Call) -> Any:
    return openapi_document(call.base)


@handles("csrf")
async def csrf(call: Call) -> Any:
    return {"csrf_token": call.request.scope["state"]["csrf_token"], "header": "X-CSRF-Token"}


@handles("overview")
async def overview(call: Call) -> Any:
    return await figures.overview(call.engine)


@handles("queues")
async def queues(call: Call) -> Any:
    return {"queues": await figures.queue_summaries(call.engine)}


@handles("queue_detail")
async def queue_detail(call: Call) -> Any:
    query: schemas.QueueQuery = call.query
    engine = call.engine
    name = await checks.require_queue(engine, call.path("queue"))
    summary = await figures.queue_summary(engine, name)
    return {**summary, "throughput": await figures.throughput(engine, [name], query.minutes)}


@handles("throughput")
async def throughput(call: Call) -> Any:
    query: schemas.ThroughputQuery = call.query
    engine = call.engine
    names = (
        [await checks.require_queue(engine, query.queue)]
        if query.queue
        else await inspector.queue_names(engine)
    )
    return {"queues": names, "minutes": await figures.throughput(engine, names, query.minutes)}


@handles("list_jobs")
async def list_jobs(call: Call) -> Any:
    query: schemas.JobsQuery = call.query
    page = await lookup.list_jobs(
        call.engine,
        queue=query.queue,
        status=query.status,
        task=query.task,
        search=query.search or query.q,
        limit=query.limit,
        cursor=query.cursor,
    )
    return page.as_dict()


@handles("enqueue")
async def enqueue(call: Call) -> Any:
    created = await actions.enqueue(call.engine, call.body)
    return Reply(created, {"location": f"{call.base}/api/jobs/{created.id}"})


@handles("job")
async def job(call: Call) -> Any:
    return await job_detail(call.engine, call.path("job_id"))


@handles("job_raw")
async def job_raw(call: Call) -> Any:
    """Everything about the job, in full, as a JSON file (the page shows a bounded part)."""
    detail = await job_detail(call.engine, call.path("job_id"))
    filename = f"job-{detail['id']}.json"
    return Reply(detail, {"content-disposition": f'attachment; filename="{filename}"'})


@handles("job_logs")
async def job_logs(call: Call) -> Any:
    detail = await job_detail(call.engine, call.path("job_id"))
    return {"id": detail["id"], "logs": detail["logs"]}


@handles("retry")
async def retry(call: Call) -> Any:
    return await actions.retry_job(call.engine, call.path("job_id"))


@handles("cancel")
async def cancel(call: Call) -> Any:
    return await actions.cancel_job(call.engine, call.path("job_id"))


@handles("delete")
async def delete(call: Call) -> Any:
    return await actions.delete_job(call.engine, call.path("job_id"))


@handles("dead_letters")
async def dead_letters(call: Call) -> Any:
    query: schemas.DeadLettersQuery = call.query
    engine = call.engine
    queue = await checks.require_queue(engine, call.path("queue"))
    task = checks.check_task(query.task)
    search = checks.check_search(query.search)
    page = await lookup.dead_letters(engine, queue, task, search, limit=query.limit, cursor=query.cursor)
    return {**page.as_dict(), "count": await engine.dlq(queue).count()}


@handles("replay")
async def replay(call: Call) -> Any:
    # Everything is checked before anything is replayed (the ids by ReplayRequest).
    body: schemas.ReplayRequest = call.body
    queue = call.path("queue")
    if body.all:
        if body.ids:
            raise Invalid("give either 'ids' or 'all': true, not both")
        return await actions.replay_matching(call.engine, queue, body.task or None, body.search or None)
    if body.task or body.search:
        raise Invalid("'task' and 'search' filter 'all': true; with 'ids' leave them out")
    return await actions.replay_jobs(call.engine, queue, checks.check_job_ids(body.ids))


@handles("purge")
async def purge(call: Call) -> Any:
    body: schemas.PurgeRequest = call.body
    return await actions.purge_dead(call.engine, call.path("queue"), body.task or None, body.search or None)


@handles("pause")
async def pause(call: Call) -> Any:
    return await actions.set_paused(call.engine, call.path("queue"), True)


@handles("resume")
async def resume(call: Call) -> Any:
    return await actions.set_paused(call.engine, call.path("queue"), False)


async def _bulk(call: Call, action: actions.BulkAction) -> Any:
    body: schemas.BulkRequest = call.body
    return await actions.bulk(call.engine, call.path("queue"), action, body)


@handles("bulk_retry")
async def bulk_retry(call: Call) -> Any:
    return await _bulk(call, "retry")


@handles("bulk_cancel")
async def bulk_cancel(call: Call) -> Any:
    return await _bulk(call, "cancel")


@handles("bulk_delete")
async def bulk_delete(call: Call) -> Any:
    return await _bulk(call, "delete")


@handles("queue_tasks")
async def queue_tasks(call: Call) -> Any:
    engine = call.engine
    return await breakdown.task_breakdown(engine, await checks.require_queue(engine, call.path("queue")))


@handles("queue_errors")
async def queue_errors(call: Call) -> Any:
    query: schemas.ErrorsQuery = call.query
    engine = call.engine
    queue = await checks.require_queue(engine, call.path("queue"))
    return await breakdown.error_groups(engine, queue, query.task)


@handles("workers")
async def workers(call: Call) -> Any:
    return {"workers": await figures.workers(call.engine)}


@handles("cron")
async def cron(call: Call) -> Any:
    return {"schedules": await breakdown.cron_rows(call.engine)}


@handles("cron_schedule")
async def cron_schedule(call: Call) -> Any:
    query: schemas.CronRunsQuery = call.query
    return await breakdown.cron_detail(call.engine, call.path("schedule"), query.limit)


@handles("cron_run")
async def cron_run(call: Call) -> Any:
    return await actions.run_schedule(call.engine, call.path("schedule"))


@handles("cron_pause")
async def cron_pause(call: Call) -> Any:
    return await actions.set_schedule_paused(call.engine, call.path("schedule"), True)


@handles("cron_resume")
async def cron_resume(call: Call) -> Any:
    return await actions.set_schedule_paused(call.engine, call.path("schedule"), False)


@handles("tasks")
async def tasks(call: Call) -> Any:
    return {"tasks": await figures.tasks(call.engine)}


async def not_found(request: Request) -> Response:
    return error_json(404, f"no API endpoint {request.method} {request.url.path} (see /api/openapi.json)")


def routes() -> list[BaseRoute]:
    missing = set(_OPERATIONS) - set(_ENDPOINTS)
    assert not missing, f"documented operations without a handler: {sorted(missing)}"
    return [
        *(Route(op.path, _ENDPOINTS[op.operation_id], methods=[op.method]) for op in OPERATIONS),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
