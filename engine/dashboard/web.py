"""Shared HTTP plumbing of the dashboard: JSON responses, templates, request helpers."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jinja2
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from engine.broker import RedisError
from engine.core.errors import ConnectionFailed
from engine.dashboard.errors import Invalid

if TYPE_CHECKING:
    from engine.client.app import Engine

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


async def json_body(request: Request, empty: Any = None) -> Any:
    """The request's JSON body (``empty`` when there is none: a JSON ``null`` is not "none");
    Invalid with the parser's reason if bad.

    Its size was bounded while it arrived (``guard.Guard``: 413 past the limit)."""
    body = await request.body()
    if not body.strip():
        return empty
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Invalid(f"the request body must be JSON: {exc}") from None
    except RecursionError:
        raise Invalid("the request body must be JSON nested less deeply") from None


def unavailable_message(exc: Exception) -> str:
    if isinstance(exc, ConnectionFailed):
        return str(exc)
    return f"Redis is unavailable: {type(exc).__name__}: {exc}"


UNAVAILABLE = (ConnectionFailed, RedisError, OSError)


# --- templates -------------------------------------------------------------------------------

TEXT_LIMIT = 32 * 1024
"""Characters of one payload, result, error or traceback a page shows (the rest is in the
raw JSON download): a 100 KB nested payload indents to 100 MB, which would take seconds of
the event loop on every live refresh."""
MAX_INDENT_LEVELS = 32
"""Deeper levels are indented no further, so one line's indentation stays bounded too."""
_END: Any = object()


@dataclass(frozen=True)
class Shown:
    """Text for a page: at most a limit of characters, and whether something was cut."""

    text: str
    truncated: bool


def _json_string(value: str, limit: int) -> str:
    return json.dumps(value[: limit + 1], ensure_ascii=False)


def _json_scalar(value: Any, limit: int) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _json_string(value, limit)
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # past int's str() digit limit
            return f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return _json_string(repr(value), limit)


def _json_pieces(value: Any, indent: int | None, limit: int) -> Iterator[str]:
    """JSON text of ``value`` piece by piece, without recursion (any depth), so a caller can
    stop after the first ``limit`` characters at a cost proportional to them."""
    item_sep = "," if indent is not None else ", "
    # Open containers: (their items, closing bracket, is a dict, nothing written yet).
    stack: list[tuple[Iterator[Any], str, bool, list[bool]]] = []
    current: Any = value
    while True:
        if isinstance(current, dict) and current:
            yield "{"
            stack.append((iter(current.items()), "}", True, [True]))
        elif isinstance(current, list | tuple) and current:
            yield "["
            stack.append((iter(current), "]", False, [True]))
        elif isinstance(current, dict):
            yield "{}"
        elif isinstance(current, list | tuple):
            yield "[]"
        else:
            yield _json_scalar(current, limit)
        while stack:
            items, closer, is_dict, fresh = stack[-1]
            item = next(items, _END)
            pad = "" if indent is None else "\n" + " " * (indent * min(len(stack), MAX_INDENT_LEVELS))
            if item is _END:
                stack.pop()
                if indent is not None:
                    pad = "\n" + " " * (indent * min(len(stack), MAX_INDENT_LEVELS))
                yield pad + closer
                continue
            sep = "" if fresh[0] else item_sep
            fresh[0] = False
            if is_dict:
                key, current = item
                yield sep + pad + _json_string(key if isinstance(key, str) else str(key), limit) + ": "
            else:
                current = item
                yield sep + pad
            break
        else:
            return


def _bounded(pieces: Iterator[str], limit: int) -> Shown:
    out: list[str] = []
    size = 0
    for piece in pieces:
        out.append(piece)
        size += len(piece)
        if size > limit:
            return Shown("".join(out)[:limit], True)
    return Shown("".join(out), False)


def shown_json(value: Any, limit: int = TEXT_LIMIT) -> Shown:
    """``value`` as indented JSON, cut after ``limit`` characters."""
    return _bounded(_json_pieces(value, 2, limit), limit)


def compact_json(value: Any, limit: int) -> str:
    """``value`` as one-line JSON, cut after ``limit`` characters."""
    return _bounded(_json_pieces(value, None, limit), limit).text


def shown_text(value: str | None, limit: int = TEXT_LIMIT, *, keep_end: bool = False) -> Shown:
    """Text cut to ``limit`` characters; ``keep_end`` keeps its start and its end (a
    traceback says what went wrong last)."""
    if value is None:
        return Shown("", False)
    if len(value) <= limit:
        return Shown(value, False)
    if not keep_end:
        return Shown(value[:limit], True)
    head = limit // 4
    tail = limit - head
    omitted = len(value) - head - tail
    return Shown(f"{value[:head]}\n… {omitted:,} characters left out …\n{value[-tail:]}", True)


def _dt(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@jinja2.pass_context
def _ago(context: jinja2.runtime.Context, value: datetime | None) -> str:
    if value is None:
        return ""
    # The engine's clock (pages.render puts it in every page's context as "now").
    now: datetime = context.get("now") or datetime.now(UTC)
    seconds = (now - value).total_seconds()
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
    """JSON, indented, for a <pre> (escaped by autoescape like everything else), bounded."""
    shown = shown_json(value)
    return shown.text + ("\n…" if shown.truncated else "")


def _first_line(value: str | None, limit: int = 140) -> str:
    """The last line of a message (where an exception says what it is), at most ``limit``."""
    if not value:
        return ""
    # Only the end can hold the last line: never split a megabyte to find it.
    lines = value[-(limit + 4096) :].strip().splitlines()
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
    parts: list[str] = []
    size = 0
    kwargs = job.get("kwargs")
    named = list(kwargs.items()) if isinstance(kwargs, dict) else []
    args = job.get("args")
    for name, value in [(None, a) for a in (args if isinstance(args, list) else [])] + named:
        if size > limit:
            break
        text = compact_json(value, limit + 1)
        parts.append(text if name is None else f"{name}={text}")
        size += len(parts[-1]) + 2
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
