"""Settings: validated once, at construction, with the option's name in the message."""

from __future__ import annotations

import math

import pytest

from engine import ConfigurationError, Engine, Settings
from engine.testing import FakeClock


def test_defaults_and_units() -> None:
    settings = Settings()
    assert settings.visibility_timeout_s == 30.0 and settings.cron_lease_s == 10.0
    assert settings.failed_ttl_s is None and settings.max_payload_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("visibility_timeout", 0, "visibility_timeout must be a finite number > 0"),
        ("cron_lease", math.inf, "cron_lease must be a finite number > 0"),
        ("result_ttl", True, "result_ttl must be a finite number > 0"),
        ("failed_ttl", -1, "failed_ttl must be a finite number > 0"),
        ("max_payload_bytes", 0, "max_payload_bytes must be an integer >= 1"),
        ("default_max_attempts", 0, "default_max_attempts"),
        ("default_timeout", math.nan, "default_timeout"),
        ("namespace", "no spaces", "invalid namespace name"),
        ("clock", "now", "clock must be a Clock"),
    ],
)
def test_a_bad_option_fails_at_construction_naming_it(option: str, value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Engine("redis://127.0.0.1:1", **{option: value})  # type: ignore[arg-type]


def test_assigning_an_option_revalidates_and_replaces_the_settings() -> None:
    app = Engine("redis://127.0.0.1:1", namespace="a", clock=FakeClock())
    first = app.settings
    app.namespace = "b"
    assert app.settings is not first and app.settings.namespace == "b" and first.namespace == "a"
    with pytest.raises(ConfigurationError, match="visibility_timeout"):
        app.visibility_timeout = -5
    assert app.visibility_timeout == 30.0
    assert app.retention.completed_ms == 24 * 3600 * 1000


def test_reconnect_delay_stays_capped_however_long_the_outage() -> None:
    from engine.core.backoff import MAX_RECONNECT_DELAY_S, reconnect_delay

    assert 0.025 <= reconnect_delay(0) <= 0.05
    for failures in (10, 1023, 1024, 10**6):
        assert MAX_RECONNECT_DELAY_S / 2 <= reconnect_delay(failures) <= MAX_RECONNECT_DELAY_S
