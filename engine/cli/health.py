"""``python -m engine health``: a probe for container health checks and orchestrators.

It checks, within one time bound: that Redis answers (the app's URL), that PostgreSQL does
when a database URL is configured, and, when asked, that enough workers, or the workers
named, sent a heartbeat lately. It prints one line (stdout when healthy, stderr when not)
naming each check and what failed, and exits 0 or 1: never 2, which Docker reserves, and
never a traceback, whatever the app module or the servers do.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from engine.cli.common import engine_from
from engine.client.app import Engine
from engine.core.urls import mask_url
from engine.inspector import ALIVE_WITHIN_S, workers

HEALTHY, UNHEALTHY = 0, 1


def seconds(value: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {value!r}")
    return number


def count(value: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {number}")
    return number


@dataclass
class Health:
    """What was checked: each check's line, in order, and whether it failed."""

    checks: list[tuple[bool, str]] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.checks.append((True, text))

    def fail(self, text: str) -> None:
        self.checks.append((False, text))

    @property
    def healthy(self) -> bool:
        return all(passed for passed, _ in self.checks)

    def line(self) -> str:
        parts = [text if passed else f"FAILED {text}" for passed, text in self.checks]
        return ("healthy: " if self.healthy else "unhealthy: ") + "; ".join(parts)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).rstrip(".")  # one line, whatever the message holds
    return text if text else type(exc).__name__


def _matches(name: str, worker_id: str) -> bool:
    # A pool started with --name NAME names its children NAME-<slot>-<generation>.
    return worker_id == name or re.fullmatch(re.escape(name) + r"-\d+-\d+", worker_id) is not None


async def check(
    app: Engine, *, min_workers: int = 0, names: Sequence[str] = (), timeout: float = 5.0
) -> Health:
    """Run the checks within ``timeout`` seconds in all; a check still waiting then fails,
    and the ones after it are reported as not checked."""
    health = Health()
    deadline = time.monotonic() + timeout
    pending = ["redis"]
    if app.database_url:
        pending.append("postgresql")
    if min_workers or names:
        pending.append("workers")

    def bound() -> float:
        # A server's own connect timeout, when shorter than what is left of the whole check,
        # names what failed; else the check's own bound below fires first, naming --timeout.
        return min(app.connect_timeout, max(0.0, deadline - time.monotonic()) + 0.5)

    redis_ok = False
    with anyio.move_on_after(timeout) as scope:
        where = mask_url(app.redis_url)
        app.connect_timeout = bound()
        started = time.monotonic()
        try:
            await app.connect()
        except Exception as exc:
            health.fail(f"redis: {_reason(exc)}")
        else:
            redis_ok = True
            health.ok(f"redis {where} answered in {(time.monotonic() - started) * 1000:.1f} ms")
        pending.pop(0)

        if app.database_url:
            where = mask_url(app.database_url)
            try:
                app.connect_timeout = bound()
                joblog = app.job_log()
                await joblog.connect()  # a pool of one connection: the server answered
            except Exception as exc:
                health.fail(f"postgresql: {_reason(exc)}")
            else:
                health.ok(f"postgresql {where} answered")
            pending.pop(0)

        if min_workers or names:
            if not redis_ok:
                health.fail("workers: not checked without Redis")
            else:
                await _check_workers(app, health, min_workers, names)
            pending.pop(0)
    if scope.cancelled_caught and pending:
        health.fail(f"{pending[0]}: no answer within {timeout:g} s (--timeout)")
        for what in pending[1:]:
            health.fail(f"{what}: not checked (out of time)")
    return health


async def _check_workers(app: Engine, health: Health, min_workers: int, names: Sequence[str]) -> None:
    try:
        beats = await workers(app)
    except Exception as exc:
        health.fail(f"workers: {_reason(exc)}")
        return
    now = app.clock.time()
    within = f"in the last {ALIVE_WITHIN_S:g} s in namespace {app.namespace!r}"
    if min_workers:
        text = f"{len(beats)} worker(s) with a heartbeat {within} (need >= {min_workers})"
        (health.ok if len(beats) >= min_workers else health.fail)(f"workers: {text}")
    for name in names:
        seen = [beat for beat in beats if _matches(name, beat.id)]
        if seen:
            ago = min(now - beat.seen_at for beat in seen)
            health.ok(f"worker {name!r}: seen {max(0.0, ago):.1f} s ago")
        else:
            health.fail(f"worker {name!r}: no heartbeat {within}")


def main(args: argparse.Namespace) -> int:
    """The ``health`` command: one line, exit 0 (healthy) or 1 (anything else)."""
    try:
        app = engine_from(args)
        if args.database_url:
            app.database_url = args.database_url
    except KeyboardInterrupt:
        return 130
    except (Exception, SystemExit) as exc:  # a bad URL, or an app module that fails to import
        print(f"unhealthy: configuration: {_reason(exc)}", file=sys.stderr)
        return UNHEALTHY

    async def probe() -> Health:
        try:
            return await check(
                app, min_workers=args.min_workers, names=args.worker or (), timeout=args.timeout
            )
        finally:
            with anyio.move_on_after(1.0, shield=True):
                await app.close()

    try:
        health = anyio.run(probe)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # nothing expected gets here: still one line, no traceback
        print(f"unhealthy: {type(exc).__name__}: {_reason(exc)}", file=sys.stderr)
        return UNHEALTHY
    print(health.line(), file=sys.stdout if health.healthy else sys.stderr)
    return HEALTHY if health.healthy else UNHEALTHY
