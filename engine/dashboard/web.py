"""Shared HTTP plumbing of the dashboard: JSON responses, templates, request helpers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jinja2
import msgspec
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from engine.dashboard.service import DashboardError, Invalid
from engine.errors import ConnectionFailed

if TYPE_CHECKING:
    from engine.app import Engine

MAX_BODY = 2 * 1024 * 1024
Handler = Callable[[Request], Awaitable[Response]]


def _encode_default(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


_encoder = msgspec.json.Encoder(enc_hook=_encode_default)


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def error_json(status: int, message: str) -> JSON:
    return JSON({"error": message, "status": status}, status_code=status)


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def json_body(request: Request) -> Any:
    """The request's JSON body (None when empty); Invalid with the parser's reason if bad."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise DashboardError("request body too large")
    if not body.strip():
        return None
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Invalid(f"the request body must be JSON: {exc}") from None


def unavailable_message(exc: Exception) -> str:
    if isinstance(exc, ConnectionFailed):
        return str(exc)
    return f"Redis is unavailable: {type(exc).__name__}: {exc}"


UNAVAILABLE = (ConnectionFailed, RedisError, OSError)


# --- templates -------------------------------------------------------------------------------


def _dt(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = (datetime.now(UTC) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds:.0f}s"
    elif seconds < 3600:
        text = f"{seconds / 60:.0f}m"
    elif seconds < 86400:
        text = f"{seconds / 3600:.1f}h"
    else:
        text = f"{seconds / 86400:.1f}d"
    return f"in {text}" if future else f"{text} ago"


def _pretty(value: Any) -> str:
    """JSON, indented, for a <pre> (escaped by autoescape like everything else)."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def _first_line(value: str | None, limit: int = 140) -> str:
    if not value:
        return ""
    lines = value.strip().splitlines()
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _seconds(value: float | None) -> str:
    if not value:
        return "0s"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _args_preview(job: dict[str, Any], limit: int = 90) -> str:
    parts = [json.dumps(a, ensure_ascii=False, default=repr) for a in job.get("args") or []]
    parts += [
        f"{k}={json.dumps(v, ensure_ascii=False, default=repr)}" for k, v in (job.get("kwargs") or {}).items()
    ]
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("engine.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        dt=_dt, ago=_ago, pretty=_pretty, first_line=_first_line, seconds=_seconds, args_preview=_args_preview
    )
    return Jinja2Templates(env=env)
