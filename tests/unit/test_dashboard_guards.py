"""The dashboard's pure guards: loopback detection and the credential throttle."""

from __future__ import annotations

from engine.dashboard.__main__ import is_loopback
from engine.dashboard.auth import Throttle


def test_loopback_detection() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.8.9.10"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.com"))


def test_throttle_doubles_caps_forgets_and_stays_bounded() -> None:
    now = [1000.0]
    throttle = Throttle(
        free=3, first=1.0, longest=8.0, forget_after=100.0, max_clients=50, clock=lambda: now[0]
    )
    assert [throttle.failed("a") for _ in range(2)] == [0, 0] and throttle.retry_after("a") == 0
    assert throttle.failed("a") == 1 and throttle.retry_after("a") == 1
    now[0] += 1.0
    assert throttle.retry_after("a") == 0
    assert [throttle.failed("a") for _ in range(4)] == [2, 4, 8, 8]  # doubles, up to the cap
    assert throttle.retry_after("b") == 0  # others are not affected
    throttle.succeeded("b")
    assert throttle.retry_after("a") == 8  # someone else's success clears nothing of a's
    now[0] += 200.0
    assert throttle.failed("a") == 0  # forgotten after a quiet while
    for i in range(1000):
        throttle.failed(f"flood-{i}")
    assert len(throttle) == 50
