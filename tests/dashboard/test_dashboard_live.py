"""Live pages by server-sent events (``GET /events``), and the job page's arguments and
traceback: over a real uvicorn server and Redis (httpx streaming), then in Debian's Chromium
(dark scheme, a phone's width, a page updating itself, the job page)."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from engine import Backoff, Engine, JobContext
from engine.dashboard import create_app, live
from engine.dashboard.detail import collapse_tracebacks, named_arguments, split_failure
from engine.dashboard.server import serving
from engine.testing import worker_running
from tests.helpers import eventually

TOKEN = "live-test-token-1234567"
TIMEOUT_S = 15.0  # generous: the machine is shared


def shop(app: Engine, broken: dict[str, bool], attempts: int = 1) -> None:
    @app.task(timeout=10, max_attempts=attempts, backoff=Backoff(initial=0.01, jitter=0))
    async def charge(ctx: JobContext, order: int, note: str = "", *, rush: bool = False) -> str:
        await ctx.log(f"charging order {order}")
        if broken["on"]:
            raise ValueError(f"provider rejected order {order}")
        return f"charged order {order}"


# --- the stream, read as a client --------------------------------------------------------------


class Events:
    """The events of one open stream, read as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = TIMEOUT_S) -> tuple[str, Any]:
        """The next event (comments skipped) as (name, decoded data)."""
        name, data = "message", ""
        with anyio.fail_after(timeout):
            async for line in self._lines:
                if line.startswith(":") or line.startswith("retry:"):
                    continue
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = line[len("data: ") :]
                elif line == "" and data:
                    return name, json.loads(data)
        raise AssertionError("the stream ended")

    async def until(self, wanted: str, check: Any = None, timeout: float = TIMEOUT_S) -> Any:
        """The data of the first ``wanted`` event that passes ``check``."""
        deadline = time.monotonic() + timeout
        while True:
            name, data = await self.next(max(0.01, deadline - time.monotonic()))
            if name == wanted and (check is None or check(data)):
                return data


@asynccontextmanager
async def stream(client: httpx.AsyncClient, url: str, page: str, **kw: Any) -> AsyncIterator[Events]:
    async with client.stream("GET", url + "/events", params={"page": page}, **kw) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Events(response)


def holds(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


def status_in(data: dict[str, Any], region: str = "job-live") -> str | None:
    html = data["regions"].get(region)
    found = re.search(r'id="job-status" data-status="([a-z]+)"', html or "")
    return found.group(1) if found else None


async def test_the_stream_sends_the_page_again_when_its_job_changes_state(app: Engine) -> None:
    shop(app, {"on": False})
    async with app, serving(create_app(app)) as url, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        job = await app.tasks["charge"].enqueue(7)
        async with stream(client, url, f"/jobs/{job.id}") as events:
            first = await events.until("update")
            assert status_in(first) == "waiting" and first["csrf"]
            async with worker_running(app):
                done = await events.until("update", lambda d: status_in(d) == "completed")
            assert "charged order 7" in done["regions"]["job-live"]

        # A queue page: its two live regions, then only what changed.
        async with stream(client, url, "/queues/default?status=waiting") as events:
            first = await events.until("update")
            assert set(first["regions"]) == {"queue-live", "queue-jobs"}
            assert "No jobs here." in first["regions"]["queue-jobs"]
            other = await app.tasks["charge"].enqueue(8)
            changed = await events.until("update", lambda d: other.id in d["regions"].get("queue-jobs", ""))
            assert "waiting <b>1</b>" in changed["regions"]["queue-live"]


async def test_a_page_that_is_not_live_or_not_there_is_refused(app: Engine) -> None:
    async with app, serving(create_app(app)) as url, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        for page, status in [
            ("/metrics", 404),
            ("/login", 404),
            ("https://example.com/", 422),
            ("//example.com/", 422),
            ("", 422),
            ("/jobs/no-such-job", 404),
        ]:
            response = await client.get(url + "/events", params={"page": page})
            assert response.status_code == status, (page, response.text)
            assert response.json()["status"] == status


async def test_the_stream_goes_when_its_client_goes(app: Engine) -> None:
    async with app, serving(create_app(app)) as url, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        async with stream(client, url, "/") as events:
            await events.until("update")
            assert live.open_streams() == 1
        await eventually(holds(lambda: live.open_streams() == 0), what="stream closed")


async def test_stopping_the_server_ends_open_streams_at_once(app: Engine) -> None:
    async with app, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        async with serving(create_app(app)) as url:
            response = await client.send(
                client.build_request("GET", url + "/events", params={"page": "/"}), stream=True
            )
            events = Events(response)
            await events.until("update")
            stopping = time.monotonic()
        # serving() gives uvicorn 2 s before it cancels what is left: well before that.
        assert time.monotonic() - stopping < 1.5
        assert (await events.until("bye"))["reason"] == "the server is stopping"
        await response.aclose()


async def test_a_stock_uvicorn_stops_with_streams_open(app: Engine) -> None:
    """``python -m engine.dashboard`` runs uvicorn as it comes: no hook tells the app it stops."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(app), log_level="warning", lifespan="off"))
    try:
        async with app, httpx.AsyncClient(timeout=TIMEOUT_S) as client, anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            await eventually(holds(lambda: server.started), what="uvicorn started")
            async with stream(client, url, "/") as events:
                await events.until("update")
                stopping = time.monotonic()
                server.should_exit = True  # what its SIGTERM handler does
                assert (await events.until("bye"))["reason"] == "the server is stopping"
        # serve() returned (the task group waited for it): no open response held it.
        assert time.monotonic() - stopping < 3
    finally:
        sock.close()


# --- auth and read-only apply to the stream as to the pages --------------------------------------


async def test_the_stream_needs_what_the_pages_need(app: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "AUTH_RECHECK_S", 0.1)
    async with app, serving(create_app(app, token=TOKEN)) as url:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            refused = await client.get(
                url + "/events", params={"page": "/"}, headers={"accept": "text/event-stream"}
            )
            assert refused.status_code == 401 and "authentication required" in refused.json()["error"]
            wrong = await client.get(
                url + "/events",
                params={"page": "/"},
                headers={"authorization": "Bearer not-the-token-at-all"},
            )
            assert wrong.status_code == 401
            async with stream(client, url, "/", headers={"authorization": f"Bearer {TOKEN}"}) as events:
                assert "overview-live" in (await events.until("update"))["regions"]

        # A session cookie opens it too, until the session ends (logging out anywhere).
        async with httpx.AsyncClient(timeout=TIMEOUT_S, base_url=url) as browser:
            form = await browser.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert token is not None
            login = await browser.post(
                "/login", data={"token": TOKEN, "csrf_token": token.group(1), "next": "/"}
            )
            assert login.status_code == 303
            async with stream(browser, url, "/") as events:
                first = await events.until("update")
                logout = await browser.post("/logout", data={"csrf_token": first["csrf"]})
                assert logout.status_code == 303
                assert (await events.until("reauth"))["message"]


async def test_the_host_applications_auth_is_asked_again(
    app: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "AUTH_RECHECK_S", 0.1)
    allowed = {"on": True}
    dashboard = create_app(app, auth=lambda request: allowed["on"])
    async with app, serving(dashboard) as url, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        async with stream(client, url, "/") as events:
            await events.until("update")
            allowed["on"] = False
            await events.until("reauth")
        assert (await client.get(url + "/events", params={"page": "/"})).status_code == 401


async def test_read_only_streams_show_no_actions(app: Engine) -> None:
    broken = {"on": True}
    shop(app, broken)
    async with app, worker_running(app):
        job = await app.tasks["charge"].enqueue(3)
        with pytest.raises(Exception, match="provider rejected"):
            await job.result(timeout=TIMEOUT_S)
    async with app, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        for read_only, buttons in [(False, True), (True, False)]:
            dashboard = create_app(app, read_only=read_only)
            async with serving(dashboard) as url, stream(client, url, f"/jobs/{job.id}") as events:
                html = (await events.until("update"))["regions"]["job-live"]
                assert ("data-action" in html) is buttons, read_only


# --- pure parts -----------------------------------------------------------------------------------


def test_live_regions_are_cut_out_whole() -> None:
    html = (
        '<main><section id="a" data-live><section><p>x</p></section><b>y</b></section>'
        '<section id="b">not live</section><div data-live id="c"><div></div>z</div>'
        "<section data-live>no id</section></main>"
    )
    assert live.live_regions(html) == {
        "a": '<section id="a" data-live><section><p>x</p></section><b>y</b></section>',
        "c": '<div data-live id="c"><div></div>z</div>',
    }


TB = 'Traceback (most recent call last):\n  File "x.py", line 3, in charge\n    raise ValueError(msg)\n'


def test_the_error_is_shown_once() -> None:
    failure = split_failure("ValueError: boom", TB + "ValueError: boom\n")
    assert (failure.error, failure.frames) == ("ValueError: boom", TB.rstrip())
    # A class outside builtins is named with its module in the traceback only.
    assert split_failure("Oops: a\nb", TB + "shop.errors.Oops: a\nb").frames == TB.rstrip()
    # An error the traceback does not end with (rewritten by the engine): both whole.
    assert split_failure("ResultError: x", TB + "TypeError: x").frames == TB + "TypeError: x"
    assert split_failure("NotOops: boom", TB + "Oops: boom") == split_failure(
        "NotOops: boom", TB + "Oops: boom"
    )
    assert split_failure("NotOops: boom", TB + "xNotOops: boom").frames.endswith("xNotOops: boom")
    assert split_failure("PoisonJob: died", None).frames == ""


def test_repeated_tracebacks_in_the_log_are_collapsed() -> None:
    from datetime import UTC, datetime

    at = datetime(2024, 1, 1, 12, 0, 5, tzinfo=UTC)
    other = TB.replace("line 3", "line 9")
    logs = [
        {"at": at, "level": "info", "message": "charging"},
        {"at": at, "level": "error", "message": f"ValueError: a\n\n{TB}ValueError: a"},
        {"at": at, "level": "error", "message": f"ValueError: b\n\n{other}ValueError: b"},
        {"at": at, "level": "error", "message": f"ValueError: c\n\n{other}ValueError: c\n"},
    ]
    out = collapse_tracebacks(logs, TB.rstrip())
    assert out[0] == logs[0]
    assert (out[1]["message"], out[1]["same_as"]) == ("ValueError: a", "above")
    assert out[2]["message"] == f"ValueError: b\n\n{other.rstrip()}" and "same_as" not in out[2]
    assert (out[3]["message"], out[3]["same_as"]) == ("ValueError: c", "12:00:05")


def test_arguments_are_named_by_the_signature() -> None:
    def charge(order: int, note: str = "", *extra: int, rush: bool = False, **more: Any) -> None: ...

    sig = inspect.signature(charge)
    rows = named_arguments(sig, [42, "gift", 1, 2], {"rush": True, "color": "red"})
    assert [(r["name"], r.get("value"), r["how"]) for r in rows or []] == [
        ("order", 42, "positional"),
        ("note", "gift", "positional"),
        ("*extra", [1, 2], "extra positional"),
        ("rush", True, "keyword"),
        ("color", "red", "in **more"),
    ]
    rows = named_arguments(sig, [], {"order": 1})
    assert [(r["name"], r["given"]) for r in rows or []] == [
        ("order", True),
        ("note", False),
        ("rush", False),
    ]
    # Unknown signature, or arguments that do not fit it: the page shows them as sent.
    assert named_arguments(None, [1], {}) is None
    assert named_arguments(sig, [], {}) is None
    assert named_arguments(sig, [1], {"order": 2}) is None
    assert named_arguments(sig, {"not": "a list"}, {}) is None


# --- in the browser -------------------------------------------------------------------------------

playwright_api = pytest.importorskip("playwright.async_api")
CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from tests.dashboard.test_dashboard_browser import CHROMIUM_ARGS

    async with playwright_api.async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@asynccontextmanager
async def tab(browser: Any, **options: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_S * 1000)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        yield page
    finally:
        await context.close()
    assert errors == []  # no script errors, no CSP violations


async def style(page: Any, selector: str, prop: str = "backgroundColor") -> str:
    # In one evaluation: a live update may swap the element between a lookup and a call.
    script = "([s, p]) => getComputedStyle(document.querySelector(s))[p]"
    return str(await page.evaluate(script, [selector, prop]))


def luminance(rgb: str) -> float:
    """WCAG relative luminance of a computed ``rgb(...)`` colour."""
    assert rgb.startswith("rgb"), rgb
    channels = [int(x) / 255 for x in re.findall(r"\d+", rgb)[:3]]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def dark(rgb: str) -> bool:
    return luminance(rgb) < 0.2


def contrast(one: str, other: str) -> float:
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


async def failed_job(app: Engine, order: int = 42) -> Any:
    job = await app.tasks["charge"].enqueue(order, note="gift wrap " + "x" * 200)
    with pytest.raises(Exception, match="provider rejected"):
        await job.result(timeout=TIMEOUT_S)
    return job


@needs_chromium
async def test_dark_mode_follows_the_system(app: Engine, browser: Any) -> None:
    shop(app, {"on": True})
    async with app, worker_running(app), serving(create_app(app)) as url:
        job = await failed_job(app)
        for scheme, want_dark in [("dark", True), ("light", False)]:
            async with tab(browser, color_scheme=scheme) as page:
                await page.goto(f"{url}/jobs/{job.id}")
                for selector in ("body", "dl.facts", "#job-logs", ".status.s-failed", "dl.arguments"):
                    assert dark(await style(page, selector)) is want_dark, (scheme, selector)
                # Readable: text against its own background (WCAG AA for normal text).
                for selector in ("body", ".status.s-failed", "#job-error", "pre.traceback", "#job-logs th"):
                    ratio = contrast(await style(page, selector, "color"), await style(page, selector))
                    assert ratio >= 4.5, (scheme, selector, ratio)
                assert dark(await style(page, "pre.traceback"))  # light on dark in both schemes
                await page.goto(url + "/")
                for selector in ("table.queues", "figure.chart", "header.top"):
                    assert dark(await style(page, selector)) is (want_dark or selector == "header.top")


@needs_chromium
async def test_a_phone_never_scrolls_the_page_sideways(app: Engine, browser: Any) -> None:
    shop(app, {"on": True})
    async with app, worker_running(app), serving(create_app(app)) as url:
        job = await failed_job(app)
        async with tab(
            browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
        ) as page:
            for path in ("/", "/queues/default", f"/jobs/{job.id}", "/dlq", "/queues/default?status=failed"):
                await page.goto(url + path)
                await page.locator("main h1").wait_for()
                widths = await page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
                assert widths[0] <= widths[1], (path, widths)
            # The wide job table scrolls inside its own box instead.
            await page.goto(url + "/dlq")
            box = await page.evaluate(
                "(() => { const w = document.querySelector('.table-wrap');"
                " return [w.scrollWidth, w.clientWidth]; })()"
            )
            assert box[0] > box[1]


@needs_chromium
async def test_a_page_updates_itself_by_server_sent_events(app: Engine, browser: Any) -> None:
    shop(app, {"on": False})
    async with app, serving(create_app(app)) as url, tab(browser) as page:
        fetched: list[str] = []
        page.on("request", lambda request: fetched.append(request.url))
        await page.goto(url + "/queues/default")
        await page.locator("#live-mode").filter(has_text="updates as they happen").wait_for()
        await page.locator("#queue-jobs").get_by_text("No jobs here.").wait_for()

        job = await app.tasks["charge"].enqueue(5)
        row = page.locator("#queue-jobs tr", has=page.get_by_role("link", name=job.id))
        await row.locator(".status.s-waiting").wait_for()
        async with worker_running(app):
            await page.locator("#queue-live .tabs a", has_text="completed").filter(has_text="1").wait_for()
            await row.wait_for(state="detached")  # finished jobs are not listed without the job log
        # Pushed, not polled: the page itself was fetched once.
        assert [u for u in fetched if u.endswith("/queues/default")] == [url + "/queues/default"]
        assert any("/events?page=" in u for u in fetched)


@needs_chromium
async def test_without_event_source_the_page_polls(app: Engine, browser: Any) -> None:
    shop(app, {"on": False})
    async with app, serving(create_app(app)) as url, tab(browser) as page:
        await page.add_init_script("delete window.EventSource")
        await page.goto(url + "/queues/default")
        await page.locator("#live-mode").filter(has_text="refreshes every").wait_for()
        job = await app.tasks["charge"].enqueue(6)
        await page.locator("#queue-jobs").get_by_role("link", name=job.id).wait_for()


@needs_chromium
async def test_the_job_page_shows_the_traceback_once_and_names_the_arguments(
    logged_app: Engine, browser: Any
) -> None:
    app = logged_app
    shop(app, {"on": True}, attempts=2)
    async with app, worker_running(app), serving(create_app(app)) as url:
        job = await app.tasks["charge"].enqueue(42, note="gift wrap", rush=True)
        with pytest.raises(Exception, match="provider rejected"):
            await job.result(timeout=TIMEOUT_S)
        async with tab(browser) as page:
            await page.goto(f"{url}/jobs/{job.id}")
            # Both failed attempts' log lines (shipped to PostgreSQL), once they are there.
            repeats = page.locator("#job-logs p.repeat")
            await eventually(
                lambda: _reloaded_count(page, repeats, 2),
                timeout=TIMEOUT_S,
                what="both error lines in the log",
            )
            text = await page.locator("main").inner_text()
            assert text.count("Traceback (most recent call last)") == 1
            assert (
                await page.locator("#job-error").inner_text()
            ).strip() == "ValueError: provider rejected order 42"
            frames = (await page.locator("#job-traceback").inner_text()).strip()
            assert frames.startswith("Traceback") and not frames.endswith("provider rejected order 42")
            assert "the one shown above" in await repeats.first.inner_text()

            args = page.locator("#job-arguments")
            assert await args.locator('[data-name="order"] dd').inner_text() == "42"
            assert await args.locator('[data-name="note"] dd').inner_text() == '"gift wrap"'
            assert await args.locator('[data-name="rush"] dd').inner_text() == "true"
            assert "positional" in await args.locator('[data-name="order"] .how').inner_text()
            # The JSON as sent, below (a summary that folds it away).
            assert await page.locator("#job-payload-json summary").inner_text() == "As sent (JSON)"
            assert await page.locator("#job-args").inner_text() == "[\n  42\n]"
            assert '"rush": true' in await page.locator("#job-kwargs").inner_text()


async def _reloaded_count(page: Any, locator: Any, count: int) -> bool:
    if await locator.count() >= count:
        return True
    await page.reload()
    return False


@needs_chromium
async def test_arguments_by_an_announced_signature_or_as_sent(
    app: Engine, browser: Any, redis_url: str, namespace: str
) -> None:
    # The dashboard's app does not have the task: only what a worker announced names them.
    producer = Engine(redis_url, namespace=namespace)
    shop(producer, {"on": False})
    async with producer, app, serving(create_app(app)) as url, tab(browser) as page:
        job = await producer.tasks["charge"].enqueue(9, "n")
        await page.goto(f"{url}/jobs/{job.id}")
        await page.locator("#job-args").wait_for()
        assert await page.locator("#job-arguments").count() == 0
        assert await page.locator("#job-args").inner_text() == '[\n  9,\n  "n"\n]'

        await producer.announce_tasks()  # as a worker does when it starts
        await page.reload()
        args = page.locator("#job-arguments")
        assert await args.locator('[data-name="order"] dd').inner_text() == "9"
        assert await args.locator('[data-name="note"] dd').inner_text() == '"n"'
        assert "default" in await args.locator('[data-name="rush"]').inner_text()
