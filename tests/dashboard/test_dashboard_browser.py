"""The dashboard in a real browser: Playwright driving Debian's Chromium (headless; no browser is
ever downloaded) against a real uvicorn server, Redis and an in-process worker."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine import Engine, JobContext
from engine.dashboard import create_app
from engine.dashboard.server import serving
from engine.testing import worker_running
from tests.helpers import eventually

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-test-token-123"
# Generous: another process may be benchmarking on this 2-core machine.
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))

    def on_console(msg: Any) -> None:
        # HTTP errors the test provokes (401 on a wrong token) are logged too: not script errors.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(msg.text)

    tab.on("console", on_console)
    yield tab
    await context.close()
    # No script errors and no CSP violations (Chromium reports those on the console).
    assert errors == []


def shop(app: Engine, broken: dict[str, bool]) -> None:
    @app.task(timeout=10, max_attempts=1)
    async def charge(ctx: JobContext, order: int, note: str = "") -> str:
        await ctx.log(f"charging order {order}")
        await ctx.log("calling the payment provider", level="warning")
        if broken["on"]:
            raise ValueError(f"provider rejected order {order}")
        return f"charged order {order}"

    @app.task(timeout=10)
    async def resize(ctx: JobContext, image: int) -> int:
        return image


async def test_find_inspect_and_retry_a_failed_job(app: Engine, page: Any) -> None:
    broken = {"on": True}
    shop(app, broken)
    word = f"papaya{uuid.uuid4().hex[:8]}"
    async with app, worker_running(app), serving(create_app(app)) as url:
        await app.tasks["resize"].enqueue_many([(i,) for i in range(20)])
        await app.tasks["charge"].enqueue(1, note="an ordinary order")
        job = await app.tasks["charge"].enqueue(
            42, note=f"gift wrap {word} <script>window.pwned = 1</script><img src=x onerror=window.pwned=2>"
        )
        with pytest.raises(Exception, match="provider rejected order 42"):
            await job.result(timeout=10)

        await page.goto(url + "/")
        await page.locator('[data-total="dlq"]').filter(has_text="2").wait_for()
        await page.get_by_role("link", name="default", exact=True).wait_for()

        # Search by a word of the payload, from the overview's search box.
        await page.get_by_label("Search jobs").fill(word)
        await page.get_by_label("Search jobs").press("Enter")
        await page.wait_for_url(re.compile(r"/search\?q="))
        results = page.locator("table.jobs tbody tr")
        await results.first.wait_for()
        assert await results.count() == 1
        await page.get_by_role("link", name=job.id).click()
        await page.wait_for_url(re.compile(f"/jobs/{job.id}$"))

        # Payload, error, traceback and log lines, all as text.
        kwargs = await page.locator("#job-kwargs").inner_text()
        assert word in kwargs and "<script>window.pwned = 1</script>" in kwargs
        assert await page.evaluate("typeof window.pwned") == "undefined"
        assert await page.locator("#job-args").inner_text() == "[\n  42\n]"
        assert "provider rejected order 42" in await page.locator("#job-error").inner_text()
        traceback = await page.locator("#job-traceback").inner_text()
        assert "Traceback (most recent call last)" in traceback and "ValueError" in traceback
        logs = await page.locator("#job-logs").inner_text()
        assert "charging order 42" in logs and "calling the payment provider" in logs
        assert await page.locator("#job-status").get_attribute("data-status") == "failed"

        # Fix the cause, retry, watch it complete (the page refreshes itself).
        broken["on"] = False
        await page.get_by_role("button", name="Retry").click()
        await page.locator('#job-status[data-status="completed"]').wait_for()
        assert "charged order 42" in await page.locator("#job-result").inner_text()
        assert await job.result(timeout=5) == "charged order 42"
        assert await page.get_by_role("button", name="Retry").count() == 0


async def test_replay_from_the_dead_letter_page(app: Engine, page: Any) -> None:
    broken = {"on": True}
    shop(app, broken)
    async with app, worker_running(app), serving(create_app(app)) as url:
        jobs = [await app.tasks["charge"].enqueue(i) for i in (1, 2, 3)]
        for job in jobs:
            with pytest.raises(Exception, match="provider rejected"):
                await job.result(timeout=10)
        broken["on"] = False

        await page.goto(url + "/dlq")
        rows = page.locator("#dlq-live table.jobs tbody tr")
        await rows.nth(2).wait_for()
        assert await rows.count() == 3

        # Replay one selected dead letter.
        await page.get_by_label(f"Select {jobs[0].id}").check()
        await page.get_by_role("button", name="Replay selected").click()
        await page.locator("#toast").filter(has_text="Replayed 1 job(s)").wait_for()
        assert await jobs[0].result(timeout=10) == "charged order 1"
        await page.get_by_role("link", name=jobs[0].id).wait_for(state="detached")

        # Then all the rest (after confirming).
        async def accept(dialog: Any) -> None:
            assert "Replay every dead letter of default" in dialog.message
            await dialog.accept()

        page.once("dialog", accept)
        await page.get_by_role("button", name="Replay all").click()
        await page.locator("#toast").filter(has_text="Replayed 2 job(s)").wait_for()
        assert [await j.result(timeout=10) for j in jobs[1:]] == ["charged order 2", "charged order 3"]
        await page.locator("#dlq-live").get_by_text("No jobs here.").wait_for()
        assert await app.dlq("default").count() == 0


async def test_pause_and_resume_a_queue_from_its_page(app: Engine, page: Any) -> None:
    shop(app, {"on": False})
    async with app, worker_running(app), serving(create_app(app)) as url:
        assert await app.tasks["resize"].enqueue(1) is not None
        await page.goto(url + "/queues/default")

        async def accept(dialog: Any) -> None:
            assert "Pause queue default?" in dialog.message
            await dialog.accept()

        page.once("dialog", accept)
        await page.get_by_role("button", name="Pause").click()
        await page.locator("#toast").filter(has_text="Paused").wait_for()
        await page.locator("#queue-live .badge.paused").wait_for()
        assert await app.is_paused("default")
        job = await app.tasks["resize"].enqueue(7)
        with pytest.raises(TimeoutError):
            await job.result(timeout=1.5)

        await page.get_by_role("button", name="Resume").click()
        await page.locator("#toast").filter(has_text="Resumed").wait_for()
        assert await job.result(timeout=10) == 7
        await page.locator("#queue-live .badge.paused").wait_for(state="detached")
        await page.get_by_role("button", name="Pause").wait_for()


async def test_a_token_keeps_strangers_out(app: Engine, page: Any) -> None:
    shop(app, {"on": True})
    async with app, worker_running(app), serving(create_app(app, token=TOKEN)) as url:
        job = await app.tasks["charge"].enqueue(5)
        with pytest.raises(Exception, match="provider rejected"):
            await job.result(timeout=10)

        refused = await page.request.get(url + "/api/queues")
        assert refused.status == 401 and "authentication required" in (await refused.json())["error"]

        await page.goto(f"{url}/jobs/{job.id}")
        await page.wait_for_url(re.compile(r"/login\?next="))
        assert await page.locator("#job-traceback").count() == 0
        await page.get_by_label("Token").fill("not-the-token")
        await page.get_by_role("button", name="Log in").click()
        await page.get_by_role("alert").filter(has_text="Wrong token").wait_for()

        await page.get_by_label("Token").fill(TOKEN)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url(re.compile(f"/jobs/{job.id}$"))
        assert "provider rejected order 5" in await page.locator("#job-error").inner_text()
        allowed = await page.request.get(url + "/api/queues")  # the session cookie is shared
        assert allowed.status == 200

        # A logged-in browser can act (the page sends the CSRF token), then log out.
        async def accept(dialog: Any) -> None:
            await dialog.accept()

        page.once("dialog", accept)
        await page.get_by_role("button", name="Delete").click()

        async def gone() -> bool:
            return await job.info() is None

        await eventually(gone, timeout=15, what="job deleted from the dashboard")
        await page.wait_for_url(re.compile(r"/queues/default$"))
        await page.get_by_role("button", name="Log out").click()
        await page.wait_for_url(re.compile(r"/login$"))
        assert (await page.request.get(url + "/api/queues")).status == 401
