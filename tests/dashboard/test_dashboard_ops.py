"""Operating queues from the dashboard (real Redis, through httpx's ASGI transport): per-task
metrics and figures, dead letters grouped by error, bulk retry/cancel/delete of a filtered
selection; and the bulk and cron buttons in a real browser."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from engine import Backoff, Engine, JobContext, UnrecoverableError
from engine.cron import Scheduler
from engine.dashboard import actions, create_app
from engine.dashboard.server import serving
from engine.dashboard.taskstats import Figures
from engine.testing import worker_running
from tests.dashboard import test_dashboard_browser as browser_tests
from tests.dashboard.test_dashboard_api import client, csrf_of
from tests.helpers import eventually

SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$", re.MULTILINE)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric ``name``: (labels, value)."""
    out = []
    for metric, labels, value in SAMPLE.findall(text):
        if metric == name:
            out.append((dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
    return out


def value(text: str, name: str, **labels: str) -> float:
    found = [v for ls, v in samples(text, name) if ls == labels]
    assert len(found) == 1, (name, labels, samples(text, name))
    return found[0]


def shop(app: Engine) -> None:
    @app.task(timeout=10, max_attempts=1)
    async def charge(ctx: JobContext, order: int, reason: str = "card declined") -> str:
        raise UnrecoverableError(f"order {order}: {reason}")

    @app.task(timeout=10)
    async def resize(ctx: JobContext, image: int) -> int:
        return image


async def _ran(app: Engine) -> None:
    """Three resizes completed, three charges declined and one refused for another reason."""
    async with worker_running(app, concurrency=4):
        done = await app.tasks["resize"].enqueue_many([(i,) for i in range(3)])
        failed = [await app.tasks["charge"].enqueue(i) for i in (17, 18, 19)]
        failed.append(await app.tasks["charge"].enqueue(20, reason="no such account"))
        assert [await j.result(timeout=10) for j in done] == [0, 1, 2]
        for job in failed:
            with pytest.raises(Exception, match="order"):
                await job.result(timeout=10)


# --- metrics ------------------------------------------------------------------------------------


async def test_metrics_have_a_task_label_and_flow_gauges(app: Engine) -> None:
    shop(app)
    async with app, client(create_app(app)) as c:
        await _ran(app)
        text = (await c.get("/metrics")).text
        assert value(text, "engine_jobs_completed_total", queue="default", task="resize") == 3
        assert value(text, "engine_jobs_failed_total", queue="default", task="charge") == 4
        assert value(text, "engine_jobs_completed_total", queue="default", task="charge") == 0
        # Counted for the queue only: no task label.
        assert value(text, "engine_jobs_enqueued_total", queue="default") == 7
        for task, n in (("resize", 3), ("charge", 4)):
            labels = {"queue": "default", "task": task}
            assert value(text, "engine_job_duration_seconds_count", **labels) == n
            buckets = [
                v
                for ls, v in samples(text, "engine_job_duration_seconds_bucket")
                if ls.pop("le") and ls == labels
            ]
            assert len(buckets) == 15 and buckets == sorted(buckets) and buckets[-1] == n
        # The per-task series add up to the queue's totals.
        stats = (await app.stats())["default"]
        for name, field in (
            ("engine_jobs_completed_total", "completed"),
            ("engine_jobs_failed_total", "failed"),
        ):
            assert sum(v for ls, v in samples(text, name) if ls["queue"] == "default") == stats[field]
        assert value(text, "engine_queue_paused", queue="default") == 0
        assert value(text, "engine_queue_throttled", queue="default") == 0

        await app.pause("default")
        await app.tasks["resize"].enqueue_many([(i,) for i in range(2)])
        text = (await c.get("/metrics")).text
        assert value(text, "engine_queue_paused", queue="default") == 1
        assert value(text, "engine_queue_throttled", queue="default") == 2
        assert "# TYPE engine_queue_paused gauge" in text and "# TYPE engine_queue_throttled gauge" in text


async def test_counts_without_a_task_go_to_the_empty_task_label(app: Engine) -> None:
    shop(app)
    async with app, client(create_app(app)) as c:
        idle = (await c.get("/metrics")).text
        assert value(idle, "engine_jobs_completed_total", queue="default", task="") == 0
        job = await app.tasks["resize"].with_options(delay=600).enqueue(1)
        assert await job.cancel()  # a delayed job: cancel.lua counts it for the queue only
        text = (await c.get("/metrics")).text
        assert value(text, "engine_jobs_cancelled_total", queue="default", task="") == 1


async def test_a_partitioned_queue_is_one_queue_in_the_metrics(app: Engine) -> None:
    app.queue("events", partitions=3)

    @app.task(queue="events", timeout=10)
    async def record(ctx: JobContext, n: int) -> int:
        return n

    async with app, client(create_app(app)) as c:
        async with worker_running(app):
            jobs = [await record.enqueue(i) for i in range(6)]
            assert [await j.result(timeout=10) for j in jobs] == list(range(6))
        assert len({(await j.info()).partition for j in jobs}) > 1  # type: ignore[union-attr]
        text = (await c.get("/metrics")).text
        assert value(text, "engine_jobs_completed_total", queue="events", task="record") == 6
        assert value(text, "engine_job_duration_seconds_count", queue="events", task="record") == 6
        assert not [ls for ls, _ in samples(text, "engine_jobs_completed_total") if "#" in ls["queue"]]
        rows = (await c.get("/api/queues/events/tasks")).json()["tasks"]
        assert [(r["task"], r["completed"]) for r in rows] == [("record", 6)]


def test_quantiles_are_interpolated_within_buckets() -> None:
    figures = Figures()
    figures.buckets["0.1"] = 50  # 50 in (0.05, 0.1]
    figures.buckets["1"] = 50  # 50 in (0.5, 1]
    assert figures.quantile(0.5) == pytest.approx(0.1)
    assert figures.quantile(0.95) == pytest.approx(0.5 + 0.5 * 45 / 50)
    assert Figures().quantile(0.5) is None


# --- per task, errors ---------------------------------------------------------------------------


async def test_per_task_figures_and_errors_grouped(app: Engine) -> None:
    shop(app)
    async with app, client(create_app(app)) as c:
        await _ran(app)
        body = (await c.get("/api/queues/default/tasks")).json()
        assert body["estimated"] is True and body["queue"] == "default"
        rows = {t["task"]: t for t in body["tasks"]}
        assert (rows["resize"]["completed"], rows["resize"]["failed"], rows["resize"]["failure_rate"]) == (
            3,
            0,
            0,
        )
        assert (rows["charge"]["completed"], rows["charge"]["failed"], rows["charge"]["failure_rate"]) == (
            0,
            4,
            1,
        )
        for row in rows.values():
            assert row["p50_seconds"] is not None and 0 <= row["p50_seconds"] <= row["p95_seconds"] <= 0.5
        # Throughput over the last hour, from the per-minute counts.
        assert (rows["resize"]["last_hour_completed"], rows["resize"]["last_hour_failed"]) == (3, 0)
        assert (rows["charge"]["last_hour_completed"], rows["charge"]["last_hour_failed"]) == (0, 4)
        assert rows["charge"]["per_minute"] == round(4 / 60, 2)
        assert (await c.get("/api/queues/nope/tasks")).status_code == 404

        errors = (await c.get("/api/queues/default/errors")).json()
        assert errors["complete"] is True and errors["scanned"] == 4
        groups = [(g["error"], g["count"], g["tasks"]) for g in errors["groups"]]
        assert groups == [
            ("UnrecoverableError: order N: card declined", 3, ["charge"]),
            ("UnrecoverableError: order 20: no such account", 1, ["charge"]),
        ]
        assert errors["groups"][0]["kind"] == "UnrecoverableError"
        # The group's search text finds exactly its jobs.
        search = errors["groups"][1]["search"]
        found = (await c.get("/api/queues/default/dlq", params={"search": search})).json()
        assert len(found["jobs"]) == 1 and "no such account" in found["jobs"][0]["error"]
        search = errors["groups"][0]["search"]
        found = (await c.get("/api/queues/default/dlq", params={"search": search})).json()
        assert len(found["jobs"]) >= 3

        page = (await c.get("/queues/default")).text
        assert 'id="task-breakdown"' in page and "estimates" in page
        assert "UnrecoverableError: order N: card declined" in page
        dlq = (await c.get("/dlq?queue=default")).text
        assert 'id="error-groups"' in dlq and "/dlq?queue=default&amp;q=" in dlq


async def test_errors_grouped_from_the_job_log_too(logged_app: Engine) -> None:
    app = logged_app
    shop(app)

    async def shipped() -> bool:
        return len((await app.history(status="failed")).jobs) == 4

    async with app, client(create_app(app)) as c:
        await _ran(app)
        async with worker_running(app):  # its shipper writes the job log
            await eventually(shipped, timeout=15, what="failed jobs in the history")
        # One failed job gone from Redis (its retention ran out, say): only the job log knows it.
        gateway = app.gateway
        qk = gateway.keys.queue("default")
        entries = await gateway.redis.xrange(qk.dlq)
        gone = entries[0]
        await gateway.redis.xdel(qk.dlq, gone[0])
        await gateway.redis.delete(qk.job(gone[1]["j"]))
        assert await app.dlq("default").count() == 3

        errors = (await c.get("/api/queues/default/errors")).json()
        assert errors["source"] == "history" and errors["complete"] is True
        assert sum(g["count"] for g in errors["groups"]) == 4  # each job once, wherever it is known
        assert {g["error"]: g["count"] for g in errors["groups"]} == {
            "UnrecoverableError: order N: card declined": 3,
            "UnrecoverableError: order 20: no such account": 1,
        }


# --- bulk actions -------------------------------------------------------------------------------


async def test_bulk_cancel_retry_delete_of_a_filtered_selection(app: Engine) -> None:
    shop(app)
    async with app, client(create_app(app)) as c:
        csrf = await csrf_of(c)
        later = app.tasks["resize"].with_options(delay=600)
        resized = [await later.enqueue(i) for i in range(5)]
        charged = [await app.tasks["charge"].with_options(delay=600).enqueue(i) for i in range(2)]

        url = "/api/queues/default/jobs/cancel"
        counted = await c.post(url, json={"task": "resize", "dry_run": True}, headers=csrf)
        assert counted.status_code == 200
        assert counted.json() == {
            "action": "cancel",
            "queue": "default",
            "matched": 5,
            "done": 0,
            "skipped": 0,
            "dry_run": True,
            "limit": 10_000,
        }
        assert all([await j.status() == "delayed" for j in resized])
        done = (await c.post(url, json={"task": "resize", "status": "delayed"}, headers=csrf)).json()
        assert (done["matched"], done["done"], done["skipped"]) == (5, 5, 0)
        assert all([await j.status() == "cancelled" for j in resized])
        assert all([await j.status() == "delayed" for j in charged])

        # A status the action does not apply to is refused, saying which ones it does.
        refused = await c.post("/api/queues/default/jobs/retry", json={"status": "waiting"}, headers=csrf)
        assert refused.status_code == 422 and "retry applies to failed jobs" in refused.json()["error"]

        # Retry the failed ones; then delete those that failed again.
        async with worker_running(app):
            fail_now = [await app.tasks["charge"].enqueue(i) for i in (1, 2, 3)]
            for job in fail_now:
                with pytest.raises(Exception, match="declined"):
                    await job.result(timeout=10)
            retried = (
                await c.post("/api/queues/default/jobs/retry", json={"search": "declined"}, headers=csrf)
            ).json()
            assert (retried["matched"], retried["done"]) == (3, 3)
            await eventually(lambda: _dead(app, 3), what="failed again")
        deleted = (
            await c.post("/api/queues/default/jobs/delete", json={"status": "failed"}, headers=csrf)
        ).json()
        assert (deleted["matched"], deleted["done"]) == (3, 3)
        assert await app.dlq("default").count() == 0
        assert all([await j.info() is None for j in fail_now])

        # No CSRF token: refused, nothing done.
        bare = await c.post("/api/queues/default/jobs/cancel", json={})
        assert bare.status_code == 403 and "CSRF" in bare.json()["error"]
        assert all([await j.status() == "delayed" for j in charged])
        assert (await c.post("/api/queues/nope/jobs/cancel", json={}, headers=csrf)).status_code == 404


async def _dead(app: Engine, n: int) -> bool:
    return await app.dlq("default").count() == n


async def test_bulk_is_bounded(app: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The limit is 10,000; a smaller one here tests the same path without 10,001 jobs.
    monkeypatch.setattr(actions, "MAX_BULK_JOBS", 3)
    shop(app)
    async with app, client(create_app(app)) as c:
        csrf = await csrf_of(c)
        jobs = await app.tasks["resize"].with_options(delay=600).enqueue_many([(i,) for i in range(4)])
        refused = await c.post("/api/queues/default/jobs/cancel", json={}, headers=csrf)
        assert refused.status_code == 422
        assert (
            "more than 3 jobs" in refused.json()["error"]
            and "at most 3 per request" in refused.json()["error"]
        )
        assert all([await j.status() == "delayed" for j in jobs])  # refused whole
        narrowed = await c.post("/api/queues/default/jobs/cancel", json={"search": jobs[0].id}, headers=csrf)
        assert narrowed.status_code == 200 and narrowed.json()["done"] == 1


async def test_read_only_hides_and_refuses_bulk_actions(app: Engine) -> None:
    shop(app)
    async with app, client(create_app(app, read_only=True)) as c:
        csrf = await csrf_of(c)
        job = await app.tasks["resize"].with_options(delay=600).enqueue(1)
        refused = await c.post("/api/queues/default/jobs/cancel", json={}, headers=csrf)
        assert refused.status_code == 403 and "read-only" in refused.json()["error"]
        assert await job.status() == "delayed"
        page = (await c.get("/queues/default")).text
        assert "data-bulk-op" not in page and "ops.js" not in page
    async with client(create_app(app)) as c:
        page = (await c.get("/queues/default?status=delayed")).text
        assert 'data-bulk-op="cancel"' in page and 'data-bulk-op="delete"' in page
        assert 'data-bulk-op="retry"' not in page  # no delayed job can be retried


# --- in a browser -------------------------------------------------------------------------------

browser_only = pytest.mark.skipif(
    shutil.which(browser_tests.CHROMIUM) is None, reason="needs Debian's chromium"
)


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Any]:
    async with browser_tests.playwright_api.async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=browser_tests.CHROMIUM, args=browser_tests.CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def tab(chromium: Any) -> AsyncIterator[Any]:
    """A fresh page; the test fails on any script error or CSP violation it logs."""
    context = await chromium.new_context()
    context.set_default_timeout(browser_tests.TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def on_console(msg: Any) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(msg.text)

    page.on("console", on_console)
    yield page
    await context.close()
    assert errors == []


@browser_only
async def test_bulk_cancel_from_the_queue_page(app: Engine, tab: Any) -> None:
    page = tab
    shop(app)
    async with app, serving(create_app(app)) as url:
        later = app.tasks["resize"].with_options(delay=600)
        jobs = [await later.enqueue(i) for i in range(3)]
        other = await app.tasks["charge"].with_options(delay=600).enqueue(1)
        await page.goto(url + "/queues/default?status=delayed&task=resize")
        questions: list[str] = []

        async def accept(dialog: Any) -> None:
            questions.append(dialog.message)
            await dialog.accept()

        page.once("dialog", accept)
        await page.get_by_role("button", name="Cancel matching…").click()
        await page.locator("#toast").filter(has_text="Cancelled 3 of 3 job(s)").wait_for()
        assert questions == ["Cancel 3 delayed job(s) of default matching the filter?"]
        assert all([await j.status() == "cancelled" for j in jobs])
        assert await other.status() == "delayed"

        # Dismissing the confirmation does nothing.
        await page.goto(url + "/queues/default?status=delayed")
        dismissed = anyio.Event()

        async def dismiss(dialog: Any) -> None:
            assert dialog.message.startswith("Delete 1 delayed job(s) of default")
            await dialog.dismiss()
            dismissed.set()

        page.once("dialog", dismiss)
        button = page.get_by_role("button", name="Delete matching…")
        await button.click()
        with anyio.fail_after(15):
            await dismissed.wait()
        await eventually(button.is_enabled, what="the button back after the dismissal")
        assert await other.status() == "delayed"


@browser_only
async def test_cron_run_now_and_pause_from_the_cron_page(app: Engine, tab: Any) -> None:
    page = tab

    @app.cron("0 0 1 1 *", name="yearly", timeout=5)
    async def yearly(ctx: JobContext) -> None: ...

    async with app, serving(create_app(app)) as url:
        await Scheduler(app, "w1").announce()
        await page.goto(url + "/cron")
        row = page.locator("tr", has=page.locator('td[data-schedule="yearly"]'))
        await row.get_by_text("none yet").wait_for()

        page.once("dialog", lambda dialog: dialog.accept())
        await row.get_by_role("button", name="Run now").click()
        await page.locator("#toast").filter(has_text="Enqueued").wait_for()
        runs = await app.schedule_runs("yearly")
        assert [r.kind for r in runs] == ["manual"] and (await app.stats())["default"]["waiting"] == 1
        await row.locator('li[data-kind="manual"]').wait_for()

        messages: list[str] = []

        async def accept(dialog: Any) -> None:
            messages.append(dialog.message)
            await dialog.accept()

        page.once("dialog", accept)
        await row.get_by_role("button", name="Pause").click()
        await page.locator("#toast").filter(has_text="Paused").wait_for()
        await row.locator(".badge.paused").wait_for()
        assert messages and messages[0].startswith("Pause yearly?")
        assert await app.is_schedule_paused("yearly")

        await row.get_by_role("button", name="Resume").click()
        await page.locator("#toast").filter(has_text="Resumed").wait_for()
        await row.locator(".badge.paused").wait_for(state="detached")
        assert not await app.is_schedule_paused("yearly")


# --- who ran each attempt ---------------------------------------------------------------------


async def test_the_job_page_names_the_worker_of_each_attempt(app: Engine) -> None:
    @app.task(timeout=10, max_attempts=3, backoff=Backoff(initial=0.01, max=0.05, jitter=0.0))
    async def flaky(ctx: JobContext) -> str:
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        return "done"

    async with app, client(create_app(app)) as c:
        async with worker_running(app, concurrency=2) as worker:
            job = await flaky.enqueue()
            assert await job.result(timeout=20) == "done"
        detail = (await c.get(f"/api/jobs/{job.id}")).json()
        assert detail["attempt_workers"] == [worker.id] * 3
        page = (await c.get(f"/jobs/{job.id}")).text
        assert page.count(f"attempt 3: {worker.id}") == 1
