"""Peer drivers: one module per Python job queue the engine is compared with.

Each module documents at its top the settings that peer's own documentation recommends for
throughput and the ones used here; it holds both the worker app (the probe's job bodies in
the peer's task API, imported by the peer's worker CLI) and the producer-side ``Driver``.
A peer that is not installed is skipped with a note (:func:`load`).
"""

from __future__ import annotations

import importlib

from benchmarks.suite.driver import Driver

PEERS: tuple[str, ...] = ("arq", "saq", "taskiq", "streaq", "dramatiq", "rq", "celery")
# The distributions each driver needs (what `pip install` would name).
REQUIRES: dict[str, str] = {
    "arq": "arq",
    "saq": "saq",
    "taskiq": "taskiq, taskiq-redis",
    "streaq": "streaq",
    "dramatiq": "dramatiq",
    "rq": "rq",
    "celery": "celery (with kombu's redis transport)",
}


def load(name: str) -> type[Driver] | str:
    """The driver class of peer ``name``, or why it cannot run (e.g. not installed)."""
    try:
        module = importlib.import_module(f"benchmarks.peers.{name}")
    except ImportError as exc:
        return f"not installed ({exc.name or exc}); pip install {REQUIRES[name]}"
    except Exception as exc:  # an installed but incompatible version: skip it, say why
        return f"cannot be imported: {type(exc).__name__}: {exc}"
    driver: type[Driver] = module.PeerDriver
    return driver
