"""The read side's Redis queries: what the inspector and the dashboard show."""

from __future__ import annotations

from typing import Any

from engine.core.keys import Keys


class Reads:
    """Read-only queries over one namespace's keys (``gateway.reads``)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
