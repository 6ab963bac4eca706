"""Command lines: ``python -m engine.worker`` (:mod:`engine.cli.worker`) and
``python -m engine <command>`` (:mod:`engine.cli.commands`).

Errors a user can fix (bad MODULE:APP, bad URL, unreachable server, bad arguments) print
one line and exit 2 or 1, never a traceback.
"""

from engine.cli.commands import build_parser, main
from engine.cli.common import UsageError, load_app
from engine.cli.worker import worker_main, worker_parser

__all__ = ["UsageError", "build_parser", "load_app", "main", "worker_main", "worker_parser"]
