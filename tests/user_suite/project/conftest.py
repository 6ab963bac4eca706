"""The user's conftest: the plugin's fixtures, pointed at this project's own app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import shop

from engine import Engine
from engine.testing import inline_mode
from engine.testing.plugin import AppFactory


@pytest.fixture
async def engine_app(engine_app_factory: AppFactory) -> Engine:
    # shop.app on the session's Valkey, in a namespace of this test's own (engine_worker runs it)
    return await engine_app_factory(shop.app)


@pytest.fixture
async def engine_inline_app() -> AsyncIterator[Engine]:
    # shop.app in inline mode: its jobs run when enqueued, no Redis
    async with inline_mode(shop.app) as app:
        yield app


@pytest.fixture(autouse=True)
def _forget() -> None:
    shop.attempts_seen.clear()
    shop.mailed.clear()
