"""The OpenAPI 3.1 document of the dashboard's JSON API (written by hand, kept next to api.py)."""

from __future__ import annotations

from typing import Any

from engine.core.model import Status
from engine.dashboard.checks import STATUS_CHOICES

STATUSES = list(STATUS_CHOICES)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "422": {"$ref": "#/components/responses/Invalid"},
    "429": {"$ref": "#/components/responses/TooManyFailures"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}


def _param(name: str, where: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


QUEUE = _param("queue", "path", "Queue name.")
JOB_ID = _param("job_id", "path", "Job id.")
LIMIT = _param(
    "limit", "query", "Page size (1-200, default 50).", {"type": "integer", "minimum": 1, "maximum": 200}
)
CURSOR = _param("cursor", "query", "The next_cursor of the previous page.")
TASK = _param("task", "query", "Only this task's jobs.")
SEARCH = _param(
    "search", "query", "Case-insensitive text in the job id, task name, error or payload (alias: q)."
)


def _op(
    summary: str,
    response: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    unsafe: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": _json(response), **_ERRORS, **(extra or {})},
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        op["responses"]["413"] = {"$ref": "#/components/responses/TooLarge"}
    if unsafe:
        op["parameters"] = [*op.get("parameters", []), {"$ref": "#/components/parameters/CSRF"}]
    return op


NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}
CONFLICT = {"409": {"$ref": "#/components/responses/Conflict"}}


def openapi_document(base: str = "") -> dict[str, Any]:
    job_list = {
        "type": "object",
        "properties": {
            "jobs": {"type": "array", "items": _ref("Job")},
            "next_cursor": {"type": ["string", "null"]},
            "source": {"enum": ["redis", "history"]},
            "notice": {"type": ["string", "null"]},
            "scanned": {"type": "integer"},
        },
    }
    paths: dict[str, Any] = {
        "/api/overview": {
            "get": _op("Queues, totals, throughput per minute and live workers", {"type": "object"})
        },
        "/api/queues": {
            "get": _op(
                "Every queue with its counts and lag",
                {"type": "object", "properties": {"queues": {"type": "array", "items": _ref("Queue")}}},
            )
        },
        "/api/queues/{queue}": {
            "get": _op(
                "One queue: counts, lag and throughput",
                _ref("Queue"),
                params=[QUEUE, _param("minutes", "query", "Throughput window (1-120).", {"type": "integer"})],
                extra=NOT_FOUND,
            )
        },
        "/api/queues/{queue}/dlq": {
            "get": _op(
                "Dead letters of a queue, newest first",
                job_list,
                params=[QUEUE, TASK, SEARCH, LIMIT, CURSOR],
                extra=NOT_FOUND,
            )
        },
        "/api/queues/{queue}/dlq/replay": {
            "post": _op(
                "Replay dead letters: the given ids, or all matching task/search",
                {"type": "object", "properties": {"replayed": {"type": "integer"}}},
                params=[QUEUE],
                body={
                    "type": "object",
                    "properties": {
                        "ids": {"type": "array", "items": {"type": "string"}},
                        "all": {"type": "boolean"},
                        "task": {"type": "string"},
                        "search": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
                extra=NOT_FOUND,
                unsafe=True,
            )
        },
        "/api/queues/{queue}/dlq/purge": {
            "post": _op(
                "Delete dead letters (all, or those matching task/search): each job's data and log "
                "lines in Redis, and its PostgreSQL history row and log rows when the job log is on",
                {"type": "object", "properties": {"purged": {"type": "integer"}}},
                params=[QUEUE],
                body={
                    "type": "object",
                    "properties": {"task": {"type": "string"}, "search": {"type": "string"}},
                    "additionalProperties": False,
                },
                extra=NOT_FOUND,
                unsafe=True,
            )
        },
        "/api/throughput": {
            "get": _op(
                "Completed and failed jobs per minute",
                {"type": "object"},
                params=[
                    _param("queue", "query", "One queue (default: all)."),
                    _param("minutes", "query", "1-120"),
                ],
            )
        },
        "/api/jobs": {
            "get": _op(
                "Jobs by queue, status, task and search text, newest or oldest first per source",
                job_list,
                params=[
                    _param("queue", "query", "Queue name."),
                    _param("status", "query", "One status (default: all).", {"enum": STATUSES}),
                    TASK,
                    SEARCH,
                    LIMIT,
                    CURSOR,
                ],
                extra=NOT_FOUND,
            ),
            "post": {
                **_op(
                    "Enqueue a job; arguments are checked against the task's signature",
                    _ref("Created"),
                    body={
                        "type": "object",
                        "required": ["task"],
                        "properties": {
                            "task": {"type": "string"},
                            "args": {"type": "array"},
                            "kwargs": {"type": "object"},
                            "delay": {"type": "number", "minimum": 0},
                            "queue": {"type": "string"},
                            "idempotency_key": {"type": "string"},
                            "max_attempts": {"type": "integer", "minimum": 1},
                            "timeout": {"type": "number", "exclusiveMinimum": 0},
                        },
                    },
                    unsafe=True,
                ),
            },
        },
        "/api/jobs/{job_id}": {
            "get": _op(
                "A job with its log lines, timeline and allowed actions",
                _ref("Job"),
                params=[JOB_ID],
                extra=NOT_FOUND,
            ),
            "delete": _op(
                "Delete a job that is not running: its data and log lines in Redis, and its "
                "PostgreSQL history row and log rows when the job log is on",
                {"type": "object"},
                params=[JOB_ID],
                extra={**NOT_FOUND, **CONFLICT},
                unsafe=True,
            ),
        },
        "/api/jobs/{job_id}/raw": {
            "get": _op(
                "The whole job in full, as a JSON file (pages show a bounded part)",
                _ref("Job"),
                params=[JOB_ID],
                extra=NOT_FOUND,
            )
        },
        "/api/jobs/{job_id}/logs": {
            "get": _op("A job's log lines", {"type": "object"}, params=[JOB_ID], extra=NOT_FOUND)
        },
        "/api/jobs/{job_id}/retry": {
            "post": _op(
                "Retry a failed job (same id, attempts reset)",
                {"type": "object"},
                params=[JOB_ID],
                extra={**NOT_FOUND, **CONFLICT},
                unsafe=True,
            )
        },
        "/api/jobs/{job_id}/cancel": {
            "post": _op(
                "Cancel a waiting, delayed or running job",
                {"type": "object"},
                params=[JOB_ID],
                extra={**NOT_FOUND, **CONFLICT},
                unsafe=True,
            )
        },
        "/api/workers": {"get": _op("Live workers: heartbeat, load and running jobs", {"type": "object"})},
        "/api/cron": {"get": _op("Cron schedules: next and last run, leader", {"type": "object"})},
        "/api/tasks": {"get": _op("Known tasks and their signatures", {"type": "object"})},
        "/api/csrf": {"get": _op("The CSRF token (also set as the engine_csrf cookie)", {"type": "object"})},
    }
    paths["/api/jobs"]["post"]["responses"] = {
        "201": _json(_ref("Created"), "Created"),
        **_ERRORS,
        "413": {"$ref": "#/components/responses/TooLarge"},
    }
    error = {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    }

    def err(description: str) -> dict[str, Any]:
        return _json(_ref("Error"), description)

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "engine dashboard API",
            "version": "1",
            "description": "Inspect and operate the job engine. State-changing requests need the "
            "X-CSRF-Token header (GET /api/csrf) unless authenticated with a bearer token. "
            "Request bodies are limited to 2 MiB (413); wrong credentials are throttled per "
            "client address (429 with Retry-After).",
        },
        "servers": [{"url": base or "/"}],
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
            "responses": {
                "Unauthorized": err("Authentication required"),
                "Forbidden": err(
                    "CSRF check failed, the dashboard is read-only, or the Host is not one it answers to"
                ),
                "Invalid": err("Bad parameters or body; the message says which and why"),
                "NotFound": err("Unknown queue or job"),
                "Conflict": err("The job is not in a state that allows this"),
                "Unavailable": err("Redis cannot be reached"),
                "TooLarge": err("The request body is over the limit (2 MiB, or the payload limit)"),
                "TooManyFailures": err(
                    "Too many wrong credentials from this address: wait Retry-After seconds"
                ),
            },
            "schemas": {
                "Error": error,
                "Queue": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        **{
                            k: {"type": "integer"}
                            for k in (
                                "waiting",
                                "active",
                                "delayed",
                                "completed",
                                "failed",
                                "dlq",
                                "retried",
                                "cancelled",
                                "enqueued",
                                "reclaimed",
                                "replayed",
                            )
                        },
                        "lag_seconds": {"type": "number"},
                    },
                },
                "Created": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "task": {"type": "string"},
                        "queue": {"type": "string"},
                        "status": {"enum": [str(Status.WAITING), str(Status.DELAYED)]},
                    },
                },
                "Job": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "queue": {"type": "string"},
                        "task": {"type": "string"},
                        "status": {"enum": STATUSES},
                        "attempts": {"type": "integer"},
                        "max_attempts": {"type": ["integer", "null"]},
                        "args": {"type": "array"},
                        "kwargs": {"type": "object"},
                        "result": {},
                        "error": {"type": ["string", "null"]},
                        "traceback": {"type": ["string", "null"]},
                        "progress": {"type": ["number", "null"]},
                        "created_at": {"type": ["string", "null"], "format": "date-time"},
                        "processed_at": {"type": ["string", "null"], "format": "date-time"},
                        "finished_at": {"type": ["string", "null"], "format": "date-time"},
                        "logs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "at": {"type": "string", "format": "date-time"},
                                    "level": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }
