"""The errors the dashboard answers with: each one an HTTP status and a message naming the fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engine.inspector import InvalidCursor


class DashboardError(Exception):
    """An error the API reports as JSON (and the pages as a message) with this status."""

    status_code = 400


class NotFound(DashboardError):
    status_code = 404


class Invalid(DashboardError):
    status_code = 422


class Conflict(DashboardError):
    status_code = 409


@contextmanager
def cursor_checked() -> Iterator[None]:
    """A cursor the inspector refuses is the client's mistake: Invalid (422), with its reason."""
    try:
        yield
    except InvalidCursor as exc:
        raise Invalid(str(exc)) from None
