"""The public surface: ``engine.__all__`` is what the package docstring documents, and the
names of DESIGN.md's public API import from where it says."""

from __future__ import annotations

import re

import engine
import engine.testing


def test_all_is_the_documented_surface() -> None:
    documented = set(re.findall(r"``(\w+)``", engine.__doc__ or "")) - {"__all__", "enqueue_many"}
    documented -= set(engine.testing.__all__)  # named there as living in engine.testing
    assert sorted(engine.__all__) == sorted(documented)
    assert len(engine.__all__) == len(set(engine.__all__))
    for name in engine.__all__:
        assert getattr(engine, name) is not None


def test_design_names_and_test_helpers_import() -> None:
    from engine import Backoff, Engine, JobContext, JobFailed, Retry, UnrecoverableError  # noqa: F401
    from engine.testing import FakeClock, Signals, worker_running  # noqa: F401

    app = Engine(redis_url="redis://127.0.0.1:1", namespace="surface")
    assert isinstance(app.settings, engine.Settings)
    assert app.namespace == app.settings.namespace == "surface"
