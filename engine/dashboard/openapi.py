"""The OpenAPI 3.1 document of the dashboard's JSON API, built from the Structs that validate
its requests and shape its responses (``schemas.py``) and from :data:`OPERATIONS`, the table
``api.routes()`` builds the routes from: what the document says is what the server does."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect as mi

from engine.dashboard import decoding, schemas

REF = "#/components/schemas/{name}"

# The errors every operation may answer with, whatever it is.
COMMON_ERRORS = (400, 401, 403, 429, 503)
ERROR_DESCRIPTIONS = {
    400: "The request is malformed (an invalid Content-Length header)",
    401: "Authentication required",
    403: "CSRF check failed, the dashboard is read-only, or the Host is not one it answers to",
    404: "Unknown queue, job or schedule",
    409: "The job is not in a state that allows this",
    413: "The request body is over the limit (2 MiB, or the payload limit)",
    422: "Bad parameters or body; the message says which and why",
    429: "Too many wrong credentials from this address: wait Retry-After seconds",
    503: "Redis cannot be reached",
}
ERROR_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    413: "TooLarge",
    422: "Invalid",
    429: "TooManyFailures",
    503: "Unavailable",
}
PATH_PARAMETERS: dict[str, tuple[Any, str]] = {
    "queue": (schemas.QueueName, "Queue name."),
    "job_id": (schemas.JobId, "Job id."),
    "schedule": (schemas.ScheduleName, "Cron schedule name."),
}


@dataclass(frozen=True)
class Operation:
    """One route of the API: ``api.routes()`` serves it with the handler named
    ``operation_id``, this module documents it."""

    method: str
    path: str
    """Under ``/api`` ("/" is ``/api`` itself)."""
    operation_id: str
    summary: str
    response: type[Any]
    status: int = 200
    query: type[msgspec.Struct] | None = None
    body: type[msgspec.Struct] | None = None
    body_required: bool = True
    errors: tuple[int, ...] = ()
    """Beyond the common ones, 404 for a path naming a queue or job, 413 with a body and
    422 with any parameter or body, which are added."""
    headers: tuple[tuple[str, str], ...] = ()
    """Response headers the success always carries: (name, description)."""

    @property
    def documented_path(self) -> str:
        return "/api" + ("" if self.path == "/" else self.path)

    def error_codes(self) -> list[int]:
        codes = set(COMMON_ERRORS) | set(self.errors)
        if "{" in self.path:
            codes |= {404, 422}
        if self.query is not None:
            codes.add(422)
        if self.body is not None:
            codes |= {413, 422}
        return sorted(codes)


_JOB_ERRORS = (404, 409)

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/", "index", "Where the OpenAPI document is, and every endpoint", schemas.ApiIndex),
    Operation("GET", "/openapi.json", "openapi", "This document", schemas.Document),
    Operation("GET", "/csrf", "csrf", "The CSRF token (also set as the engine_csrf cookie)", schemas.Csrf),
    Operation(
        "GET",
        "/overview",
        "overview",
        "Queues, totals, throughput per minute and live workers",
        schemas.Overview,
    ),
    Operation("GET", "/queues", "queues", "Every queue with its counts and lag", schemas.QueueList),
    Operation(
        "GET",
        "/queues/{queue}",
        "queue_detail",
        "One queue: counts, lag, throughput, and its partitions' counts when partitioned",
        schemas.QueueDetail,
        query=schemas.QueueQuery,
    ),
    Operation(
        "GET",
        "/queues/{queue}/dlq",
        "dead_letters",
        "Dead letters of a queue, newest first",
        schemas.DeadLetterList,
        query=schemas.DeadLettersQuery,
    ),
    Operation(
        "POST",
        "/queues/{queue}/dlq/replay",
        "replay",
        "Replay dead letters: the given ids, or all matching task/search",
        schemas.Replayed,
        body=schemas.ReplayRequest,
    ),
    Operation(
        "POST",
        "/queues/{queue}/dlq/purge",
        "purge",
        "Delete dead letters (all, or those matching task/search): each job's data and log "
        "lines in Redis, and its PostgreSQL history row and log rows when the job log is on",
        schemas.Purged,
        body=schemas.PurgeRequest,
        body_required=False,
    ),
    Operation(
        "POST",
        "/queues/{queue}/pause",
        "pause",
        "Pause a queue: no job of it starts on any worker (running ones finish; enqueues land)",
        schemas.QueueFlow,
    ),
    Operation(
        "POST",
        "/queues/{queue}/resume",
        "resume",
        "Resume a paused queue",
        schemas.QueueFlow,
    ),
    *(
        Operation(
            "POST",
            f"/queues/{{queue}}/jobs/{action}",
            f"bulk_{action}",
            f"{action.capitalize()} every {what} job of the queue matching status, task and search "
            f"(at most {schemas.MAX_BULK_JOBS:,} per request; dry_run counts them)",
            schemas.BulkResult,
            body=schemas.BulkRequest,
            body_required=False,
        )
        for action, what in (
            ("retry", "failed"),
            ("cancel", "waiting, delayed or running"),
            ("delete", "waiting, delayed or failed"),
        )
    ),
    Operation(
        "GET",
        "/queues/{queue}/tasks",
        "queue_tasks",
        "Per task: outcomes, failure rate and estimated p50/p95 run time",
        schemas.TaskBreakdown,
    ),
    Operation(
        "GET",
        "/queues/{queue}/errors",
        "queue_errors",
        "Dead letters grouped by their error's first line, biggest group first",
        schemas.ErrorGroups,
        query=schemas.ErrorsQuery,
    ),
    Operation(
        "GET",
        "/throughput",
        "throughput",
        "Completed and failed jobs per minute",
        schemas.Throughput,
        query=schemas.ThroughputQuery,
        errors=(404,),
    ),
    Operation(
        "GET",
        "/jobs",
        "list_jobs",
        "Jobs by queue, status, task and search text, newest or oldest first per source",
        schemas.JobList,
        query=schemas.JobsQuery,
        errors=(404,),
    ),
    Operation(
        "POST",
        "/jobs",
        "enqueue",
        "Enqueue a job; arguments are checked against the task's signature",
        schemas.Enqueued,
        status=201,
        body=schemas.EnqueueRequest,
        headers=(("Location", "The new job's URL"),),
    ),
    Operation(
        "GET",
        "/jobs/{job_id}",
        "job",
        "A job with its log lines, timeline and allowed actions",
        schemas.JobDetail,
    ),
    Operation(
        "DELETE",
        "/jobs/{job_id}",
        "delete",
        "Delete a job that is not running: its data and log lines in Redis, and its "
        "PostgreSQL history row and log rows when the job log is on",
        schemas.Deleted,
        errors=_JOB_ERRORS,
    ),
    Operation("GET", "/jobs/{job_id}/logs", "job_logs", "A job's log lines", schemas.JobLogs),
    Operation(
        "GET",
        "/jobs/{job_id}/raw",
        "job_raw",
        "The whole job in full, as a JSON file (pages show a bounded part)",
        schemas.JobDetail,
        headers=(("Content-Disposition", 'attachment; filename="job-<id>.json"'),),
    ),
    Operation(
        "POST",
        "/jobs/{job_id}/retry",
        "retry",
        "Retry a failed job (same id, attempts reset)",
        schemas.Retried,
        errors=_JOB_ERRORS,
    ),
    Operation(
        "POST",
        "/jobs/{job_id}/cancel",
        "cancel",
        "Cancel a waiting, delayed or running job",
        schemas.Cancelled,
        errors=_JOB_ERRORS,
    ),
    Operation(
        "GET", "/workers", "workers", "Live workers: heartbeat, load and running jobs", schemas.WorkerList
    ),
    Operation("GET", "/cron", "cron", "Cron schedules: next and last run, leader", schemas.CronList),
    Operation(
        "GET",
        "/cron/{schedule}",
        "cron_schedule",
        "A cron schedule with its recent runs",
        schemas.ScheduleDetail,
        query=schemas.CronRunsQuery,
    ),
    Operation(
        "POST",
        "/cron/{schedule}/run",
        "cron_run",
        "Enqueue the schedule's task once now (not a tick: the next tick fires as planned)",
        schemas.ScheduleRan,
    ),
    Operation(
        "POST",
        "/cron/{schedule}/pause",
        "cron_pause",
        "Pause a schedule: the leader skips its ticks (recorded as skipped) until resumed",
        schemas.ScheduleState,
    ),
    Operation(
        "POST",
        "/cron/{schedule}/resume",
        "cron_resume",
        "Resume a schedule: it fires again from its next tick, with no catch-up of skipped ones",
        schemas.ScheduleState,
    ),
    Operation("GET", "/tasks", "tasks", "Known tasks and their signatures", schemas.TaskList),
)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: ``X | None`` (absent) is just X, with no null default."""
    out = {k: v for k, v in schema.items() if k != "anyOf" and (k, v) != ("default", None)}
    branches = schema.get("anyOf")
    if branches is None:
        return out
    rest = [b for b in branches if b != {"type": "null"}]
    if len(rest) == 1:
        return {**rest[0], **out}
    return {**out, "anyOf": rest}


def _structs(kinds: list[type[Any]]) -> list[mi.StructType]:
    """Every Struct type reachable from ``kinds``."""
    seen: dict[type[Any], mi.StructType] = {}
    stack: list[mi.Type] = list(mi.multi_type_info(kinds))
    while stack:
        info = stack.pop()
        if isinstance(info, mi.StructType):
            if info.cls in seen:
                continue
            seen[info.cls] = info
            stack.extend(f.type for f in info.fields)
        elif isinstance(info, mi.Metadata):
            stack.append(info.type)
        elif isinstance(info, mi.UnionType):
            stack.extend(info.types)
        elif isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            stack.append(info.item_type)
        elif isinstance(info, mi.DictType):
            stack.append(info.value_type)
    return list(seen.values())


def _always_sent(field: mi.Field) -> bool:
    """A response field is always in the JSON unless it defaults to UNSET (msgspec marks as
    required only the fields without a default)."""
    return (
        field.required
        or field.default is not msgspec.NODEFAULT
        or field.default_factory is not msgspec.NODEFAULT
    )


def _refine(components: dict[str, Any], responses: list[type[Any]]) -> None:
    """What ``schema_components`` leaves loose in the response schemas: the fields the
    server always sends are required, and times are RFC 3339 date-times (the engine's are
    all UTC-aware; ``JobInfo``'s are declared as plain datetimes)."""
    for info in _structs(responses):
        schema = components[info.cls.__name__]
        schema["required"] = [f.encode_name for f in info.fields if _always_sent(f)]
        for field in info.fields:
            if isinstance(decoding.base_type(field.type), mi.DateTimeType):
                prop = schema["properties"][field.encode_name]
                for branch in prop.get("anyOf", [prop]):
                    if branch.get("type") == "string":
                        branch["format"] = "date-time"


def _query_parameters(kind: type[msgspec.Struct]) -> list[dict[str, Any]]:
    (_, components) = msgspec.json.schema_components([kind], ref_template=REF)
    schema = components[kind.__name__]
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema["properties"].items():
        prop = _without_null(prop)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if "description" in prop:
            parameter["description"] = prop["description"]
        if name not in required:
            # from_query takes an empty value for no value (as a form sends it).
            parameter["allowEmptyValue"] = True
        out.append(parameter)
    return out


def _path_parameters(path: str) -> list[dict[str, Any]]:
    out = []
    for name, (kind, description) in PATH_PARAMETERS.items():
        if "{" + name + "}" in path:
            schema = msgspec.json.schema(kind)
            out.append(
                {"name": name, "in": "path", "required": True, "description": description, "schema": schema}
            )
    return out


def _operation(op: Operation, refs: dict[type[Any], dict[str, Any]]) -> dict[str, Any]:
    success = _json(refs[op.response], "Created" if op.status == 201 else "OK")
    if op.headers:
        success["headers"] = {
            name: {"description": text, "required": True, "schema": {"type": "string"}}
            for name, text in op.headers
        }
    responses: dict[str, Any] = {str(op.status): success}
    for code in op.error_codes():
        responses[str(code)] = {"$ref": f"#/components/responses/{ERROR_NAMES[code]}"}
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    parameters = _path_parameters(op.path)
    if op.query is not None:
        parameters += _query_parameters(op.query)
    if op.method != "GET":
        parameters.append({"$ref": "#/components/parameters/CSRF"})
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": refs[op.body]}},
        }
    out["responses"] = responses
    return out


ERROR_HEADERS = {
    401: ("WWW-Authenticate", "The scheme to authenticate with (Bearer or Basic)"),
    429: ("Retry-After", "Seconds to wait before trying again"),
}


def _error(code: int) -> dict[str, Any]:
    out = _json({"$ref": REF.format(name="Error")}, ERROR_DESCRIPTIONS[code])
    if code in ERROR_HEADERS:
        name, text = ERROR_HEADERS[code]
        out["headers"] = {name: {"description": text, "required": True, "schema": {"type": "string"}}}
    return out


@functools.cache
def _document() -> dict[str, Any]:
    every: set[type[Any]] = {schemas.Error, *(op.response for op in OPERATIONS)}
    every |= {op.body for op in OPERATIONS if op.body is not None}
    kinds = sorted(every, key=lambda k: k.__name__)
    found, components = msgspec.json.schema_components(kinds, ref_template=REF)
    refs = dict(zip(kinds, found, strict=True))
    _refine(components, [schemas.Error, *(op.response for op in OPERATIONS)])
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.documented_path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "engine dashboard API",
            "version": "1",
            "description": "Inspect and operate the job engine. State-changing requests need the "
            "X-CSRF-Token header (GET /api/csrf) unless authenticated with a bearer token. "
            "Request bodies are limited to 2 MiB (413); wrong credentials are throttled per "
            "client address (429 with Retry-After). Every error is an Error object.",
        },
        "security": [{"bearer": []}, {"basic": []}, {"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
                "session": {"type": "apiKey", "in": "cookie", "name": "engine_session"},
            },
            "parameters": {
                "CSRF": {
                    "name": "X-CSRF-Token",
                    "in": "header",
                    "required": False,
                    "description": "Required unless authenticated with a bearer token.",
                    "schema": {"type": "string"},
                }
            },
            "responses": {name: _error(code) for code, name in ERROR_NAMES.items()},
            "schemas": components,
        },
    }


def openapi_document(base: str = "") -> dict[str, Any]:
    """The document, for an API mounted at ``base`` (a fresh copy: callers may change it)."""
    document = copy.deepcopy(_document())
    return {"openapi": document.pop("openapi"), "servers": [{"url": base or "/"}], **document}
