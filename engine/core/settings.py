"""The engine's settings: one frozen object, validated once, with the unit in each name."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

from engine.core.backoff import Backoff
from engine.core.errors import ConfigurationError
from engine.core.keys import check_name
from engine.core.limits import check_attempts, check_timeout
from engine.core.transitions import Retention

T = TypeVar("T")

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DAY_S = 24 * 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What ``Engine(...)`` was given, checked: every part of the engine reads this, so a
    bad value fails at construction with the option's name, never later in a worker."""

    redis_url: str = DEFAULT_REDIS_URL
    cluster: bool | None = None
    """True/False: a Redis Cluster or not; None: detected at connect."""
    database_url: str | None = None
    namespace: str = "engine"
    default_timeout_s: float = 60.0
    default_max_attempts: int = 5
    default_backoff: Backoff = field(default_factory=Backoff)
    visibility_timeout_s: float = 30.0
    result_ttl_s: float = DAY_S
    failed_ttl_s: float | None = None  # None: failed jobs' hashes stay until deleted or replayed
    idempotency_ttl_s: float = DAY_S
    max_payload_bytes: int = 1024 * 1024
    connect_timeout_s: float = 5.0
    cron_lease_s: float = 10.0
    history_retention_s: float = 30 * DAY_S
    failed_history_retention_s: float | None = None  # None: as long as history_retention_s
    retention: Retention = field(init=False, compare=False, repr=False)
    """How long finished jobs' hashes stay in Redis, as the scripts take it (made once here,
    not per finish call)."""

    def __post_init__(self) -> None:
        # Each option is named as Engine(...) takes it, so the message points at the call.
        check_name("namespace", self.namespace)
        if self.cluster is not None and not isinstance(self.cluster, bool):
            raise ConfigurationError(f"cluster must be True, False or None (detect), not {self.cluster!r}")
        check_timeout(self.default_timeout_s, "Engine(default_timeout)")
        check_attempts(self.default_max_attempts, "Engine(default_max_attempts)")
        if not isinstance(self.default_backoff, Backoff):
            raise ConfigurationError(
                f"default_backoff must be an engine.Backoff, not {self.default_backoff!r}"
            )
        for option in (
            "visibility_timeout",
            "result_ttl",
            "idempotency_ttl",
            "connect_timeout",
            "cron_lease",
            "history_retention",
        ):
            positive(option, getattr(self, option + "_s"))
        for option in ("failed_ttl", "failed_history_retention"):
            value = getattr(self, option + "_s")
            if value is not None:
                positive(option, value)
        size = self.max_payload_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"max_payload_bytes must be an integer >= 1, not {size!r}")
        failed = self.failed_ttl_s
        retention = Retention(int(self.result_ttl_s * 1000), 0 if failed is None else int(failed * 1000))
        object.__setattr__(self, "retention", retention)


def positive(name: str, value: Any) -> float:
    """A finite number > 0 as a float, or ConfigurationError naming the option."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{name} must be a finite number > 0, not {value!r}")
    return float(value)


class HasSettings(Protocol):
    settings: Settings


class Setting(Generic[T]):
    """An attribute that reads one field of its owner's ``settings``; assigning to it
    replaces the settings with a copy checked again, so a bad value still fails at once."""

    def __init__(self, field_name: str) -> None:
        self.field_name = field_name

    def __get__(self, owner: HasSettings | None, owner_type: type | None = None) -> T:
        if owner is None:
            return cast(T, self)
        return cast(T, getattr(owner.settings, self.field_name))

    def __set__(self, owner: HasSettings, value: T) -> None:
        changes: dict[str, Any] = {self.field_name: value}
        owner.settings = dataclasses.replace(owner.settings, **changes)
