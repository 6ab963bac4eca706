"""Logging: the engine's loggers are stdlib :mod:`logging` loggers named ``engine.*``.

The engine's modules log with structlog (``structlog.get_logger("engine.worker")``,
``"engine.cron"``, ``"engine.history"``, ``"engine.dashboard"``, ``"engine.task"`` for
``ctx.log``...), and each event becomes a :class:`logging.LogRecord` of the stdlib logger of
that name: its message is the event, its fields (``job_id``, ``task``, ``queue``,
``attempt``, ``error``...) are attributes of the record, as ``extra=`` would set them, and an
exception logged with it is the record's ``exc_info``. So levels
(``logging.getLogger("engine").setLevel(logging.WARNING)``), handlers, filters, ``caplog``,
uvicorn's log config and the Sentry and OpenTelemetry logging integrations see them like any
other record.

Library mode (the engine inside an application): importing this module routes the
structlog loggers named ``engine`` and ``engine.*`` to stdlib logging, unless the application
configured structlog itself (then its configuration applies to the engine's loggers too).
It adds no handler and sets no level, on the root logger or any other: without a handler of
the application's, Python's last-resort handler prints warnings and errors to stderr. Every
other structlog logger keeps structlog's defaults, and ``structlog.is_configured()`` stays
False. :func:`formatter` renders the engine's records as the command line does, for a
handler of the application's (``{"()": "engine.log.formatter"}`` in a ``dictConfig``).

Command line (``python -m engine.worker``, ``python -m engine.dashboard``):
:func:`configure` puts one stderr handler on the root logger, rendering every record as a
console line or a JSON object.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from engine.core.errors import FORMATTED_TRACEBACK

__all__ = ["add_arguments", "configure", "formatter"]

ROOT = "engine"
"""The parent of every logger of the engine."""

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
# Attributes every LogRecord has (and the two a Formatter adds): a field of that name cannot
# be an attribute (makeRecord refuses it), so it is set with a trailing underscore.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_NOT_FIELDS = _RECORD_ATTRIBUTES | {"color_message"}  # uvicorn's extra
_LOGGING_FILE = logging.addLevelName.__code__.co_filename


def _is_engine(name: object) -> bool:
    return isinstance(name, str) and (name == ROOT or name.startswith(ROOT + "."))


def _exc_info(value: Any) -> Any:
    """``exc_info`` as stdlib logging takes it (a triple), or None when there is no exception."""
    if not value:
        return None
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple):
        return value if value[0] is not None else None
    info = sys.exc_info()  # exc_info=True, as log.exception() passes it
    return info if info[0] is not None else None


def _stacklevel() -> int:
    """The ``stacklevel`` that makes a record name the code that called the structlog logger
    (its module, function and line) rather than structlog: counted from ``to_stdlib``'s frame
    the way :meth:`logging.Logger.findCaller` counts (logging's and the import system's
    frames left out)."""
    frame: types.FrameType | None = sys._getframe(1)  # to_stdlib's frame
    level = 1
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != __name__ and not module.startswith("structlog"):
            return level
        frame = frame.f_back
        if frame is not None:
            filename = frame.f_code.co_filename
            if not (filename == _LOGGING_FILE or ("importlib" in filename and "_bootstrap" in filename)):
                level += 1
    return 1


def to_stdlib(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: an event of a stdlib logger becomes a record of that logger (its
    fields as the record's attributes, ``exc_info`` as the record's); then the event is
    dropped from structlog's chain. Events of other loggers pass on unchanged."""
    if not isinstance(logger, logging.Logger):
        return event_dict
    level = _LEVELS.get(method_name, logging.INFO)
    if not logger.isEnabledFor(level):
        raise structlog.DropEvent
    event_dict = structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
    message = event_dict.pop("event", "")
    exc_info = _exc_info(event_dict.pop("exc_info", None))
    stack_info = bool(event_dict.pop("stack_info", False))
    extra = {(f"{key}_" if key in _RECORD_ATTRIBUTES else key): value for key, value in event_dict.items()}
    logger.log(
        level,
        message,
        exc_info=exc_info,
        stack_info=stack_info,
        stacklevel=_stacklevel(),
        extra=extra,
    )
    raise structlog.DropEvent


class _LoggerFactory:
    """Stdlib loggers for the engine's names; ``fallback`` (structlog's own default: print to
    stdout) for every other name, so an application's unconfigured structlog is unchanged."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    def __call__(self, *args: Any) -> Any:
        if args and _is_engine(args[0]):
            return logging.getLogger(args[0])
        return self.fallback(*args)


def _stdlib_logger(*args: Any) -> logging.Logger:
    """The command line's factory: every structlog logger is the stdlib logger of its name."""
    return logging.getLogger(args[0] if args and isinstance(args[0], str) else None)


def _use_stdlib_in_library_mode() -> None:
    """Route the engine's loggers to stdlib logging, once, unless structlog is configured."""
    if structlog.is_configured():
        return  # the application's configuration applies to the engine's loggers too
    defaults = structlog.get_config()
    structlog.configure(
        processors=[to_stdlib, *defaults["processors"]],
        logger_factory=_LoggerFactory(defaults["logger_factory"]),
    )
    # Still structlog's defaults for every logger but the engine's: an application that
    # configures structlog when it is not configured yet must still do so.
    config = getattr(getattr(structlog, "_config", None), "_CONFIG", None)
    if config is not None and hasattr(config, "is_configured"):
        config.is_configured = False


# --- rendering -------------------------------------------------------------------------------


def _fields_of_record(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """ProcessorFormatter pre-chain step: the record's fields (its attributes beyond the
    standard ones), then the event, as the structlog event they came from had them."""
    record = event_dict["_record"]
    fields = {
        key: value
        for key, value in record.__dict__.items()
        if key not in _NOT_FIELDS and not key.startswith("_")
    }
    return {**fields, **event_dict}


def _format_exc_info(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    """structlog's format_exc_info, but a failed attempt's traceback, which the worker has
    formatted already for the job's record (``FORMATTED_TRACEBACK``), is not formatted twice."""
    exc_info = event_dict.get("exc_info")
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    text = getattr(exc, FORMATTED_TRACEBACK, None) if isinstance(exc, BaseException) else None
    if not isinstance(text, str):
        return structlog.processors.format_exc_info(logger, name, event_dict)
    del event_dict["exc_info"]
    event_dict["exception"] = text.removesuffix("\n")  # as format_exc_info leaves it
    return event_dict


def formatter(json: bool = False) -> logging.Formatter:
    """A formatter rendering records as the command line does: a console line
    (``2026-01-01T00:00:00.000000Z [info     ] worker started   concurrency=100 ...``) or, with
    ``json=True``, a JSON object per record, an exception's traceback included."""
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            _fields_of_record,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _format_exc_info,
            renderer,
        ],
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-json``, the options every command takes for :func:`configure`."""
    parser.add_argument(
        "--log-level",
        default=os.environ.get("ENGINE_LOG_LEVEL", "info"),
        metavar="LEVEL",
        help="debug, info, warning, error or critical, any case (default: ENGINE_LOG_LEVEL, else info)",
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        default=None,
        help="JSON log lines (default: JSON unless stderr is a terminal, then plain lines)",
    )


def configure(level: str = "info", json: bool | None = None) -> None:
    """The command line's logging: records of ``level`` and above (the engine's, and those of
    the app's own loggers) on stderr, as human-readable lines on a terminal and JSON lines
    otherwise (or as asked). Called again, it replaces its handler."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    as_json = (not sys.stderr.isatty()) if json is None else json
    handler = _StderrHandler()
    handler.setFormatter(formatter(json=as_json))
    handler.set_name("engine.cli")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "engine.cli"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.getLogger(ROOT).setLevel(numeric)
    structlog.configure(
        processors=[to_stdlib],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stdlib_logger,
        cache_logger_on_first_use=True,
    )


_use_stdlib_in_library_mode()
