"""What the command lines share: loading MODULE:APP, running a coroutine with one-line
errors, confirmation prompts and the options every command takes."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from engine.client.app import Engine
from engine.core.errors import EngineError


class UsageError(Exception):
    pass


def load_app(spec: str) -> Engine:
    """Import ``module.path:attribute`` and return the Engine it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:APP (for example myapp.jobs:app), got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError(
                f"cannot import module {module_name!r} (run from the directory that contains it, "
                "or set PYTHONPATH)"
            ) from None
        raise
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, Engine) and not isinstance(obj, type):
        # An app factory (def create_app() -> Engine) is welcome; other callables are not.
        try:
            inspect.signature(obj).bind()
        except (TypeError, ValueError):
            raise UsageError(f"{spec!r} is a function that needs arguments, not an engine.Engine") from None
        obj = obj()
    if not isinstance(obj, Engine):
        raise UsageError(f"{spec!r} is a {type(obj).__name__}, not an engine.Engine")
    return obj


def run(main: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    try:
        return int(anyio.run(main) or 0)
    except (UsageError, EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        return 130


def split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError(f"{question} Refusing without a terminal to confirm; pass --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def version_line() -> str:
    """What ``--version`` prints: the installed distribution's version."""
    from engine import __version__

    return f"engine {__version__} (Python {sys.version.split()[0]})"


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", action="version", version=version_line(), help="print the installed version and exit"
    )


def prog(module_form: str, script: str) -> str:
    """The program name for usage lines: the console script's (``engine``, ``engine-worker``)
    when run as one, else the ``python -m`` form."""
    return script if os.path.basename(sys.argv[0] if sys.argv else "") == script else module_form


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app",
        metavar="MODULE:APP",
        default=None,
        help="use this app, e.g. myapp.jobs:app, with its URLs, namespace and tasks (default: "
        "Engine() configured from ENGINE_REDIS_URL, ENGINE_DATABASE_URL and ENGINE_NAMESPACE)",
    )
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        default=None,
        help="redis://, rediss://, unix://, valkey://, valkeys:// or redis+sentinel:// URL; ?cluster=1 "
        "forces cluster mode (default: ENGINE_REDIS_URL, else redis://localhost:6379/0; ignored with --app)",
    )
    parser.add_argument(
        "--namespace",
        metavar="NAME",
        default=None,
        help="the key prefix of the app's queues (default: ENGINE_NAMESPACE, else 'engine'; "
        "ignored with --app)",
    )


def engine_from(args: argparse.Namespace) -> Engine:
    if args.app:
        return load_app(args.app)
    return Engine(args.redis_url, namespace=args.namespace)
