"""A data export, end to end: the request returns at once, the export runs in a worker and
reports progress, the caller watches it over server-sent events and downloads the file.

    POST /exports            {"rows": 100000}  -> 202 {"id", "status_url", "events_url", "download_url"}
    GET  /exports/{id}       status and progress as JSON
    GET  /exports/{id}/events  text/event-stream: "progress" events, then "completed" (or "failed")
    GET  /exports/{id}/download  the CSV once it is ready (409 before)
    GET  /dashboard/         the engine's dashboard, mounted in the service

Run it all in one process (embedded Valkey when ENGINE_REDIS_URL is unset, and a worker
inside the web process), then open http://127.0.0.1:8000/ ::

    python examples/export_service.py

or as separate processes, the way it is deployed::

    python -m engine.worker examples.export_service:app --queues exports
    uvicorn examples.export_service:service

Files go to ``EXPORT_DIR`` (default ``.exports``), which the worker and the web process share.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from engine import Engine, JobContext, JobFailed, Status
from engine.dashboard import create_app

MAX_ROWS = 10_000_000
_JOB_ID = re.compile(r"^[0-9A-Z]{26}$")


def export_dir() -> Path:
    return Path(os.environ.get("EXPORT_DIR", ".exports"))


def create_engine(
    redis_url: str | None = None,
    namespace: str | None = None,
    *,
    directory: Path | None = None,
    chunk_rows: int = 10_000,
    query_latency: float = 0.05,
) -> Engine:
    """The app with its export task. ``query_latency`` stands in for the time the data source
    takes to return a chunk (a database query, an API page)."""
    engine = Engine(redis_url, namespace=namespace)
    target = directory or export_dir()

    @engine.task(queue="exports", timeout=600, max_attempts=3)
    async def export_csv(ctx: JobContext, rows: int) -> dict[str, Any]:
        """Write ``rows`` rows to <job id>.csv, chunk by chunk, reporting progress.

        The file is written as .part and renamed when complete, so a download never sees a
        half-written file; a retried attempt starts the file over (same job id, same name).
        """
        await anyio.Path(target).mkdir(parents=True, exist_ok=True)
        final = anyio.Path(target) / f"{ctx.job_id}.csv"
        part = final.with_suffix(".csv.part")
        await ctx.log(f"exporting {rows} rows (attempt {ctx.attempt})")
        async with await anyio.open_file(part, "w", newline="") as out:
            await out.write("order_id,customer,amount_cents,currency\r\n")
            for start in range(0, rows, chunk_rows):
                chunk = await fetch_rows(start, min(chunk_rows, rows - start), query_latency)
                await out.write(chunk)
                await ctx.progress(min(rows, start + chunk_rows) / rows)
        await part.rename(final)
        size = (await final.stat()).st_size
        await ctx.log(f"wrote {size} bytes to {final.name}")
        return {"file": final.name, "rows": rows, "bytes": size}

    return engine


async def fetch_rows(start: int, count: int, latency: float) -> str:
    """One chunk of the export as CSV text (the data source of this example)."""
    await anyio.sleep(latency)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for n in range(start, start + count):
        writer.writerow((n, f"customer-{n % 977}", (n * 7919) % 100_000, "EUR"))
    return buffer.getvalue()


# --- the web service -------------------------------------------------------------------------


def create_service(
    engine: Engine, *, directory: Path | None = None, inline_worker: bool = False, poll_interval: float = 0.25
) -> Starlette:
    """The HTTP side. ``inline_worker`` runs a worker inside the web process (for the demo)."""
    target = directory or export_dir()

    def links(request: Request, job_id: str) -> dict[str, str]:
        base = str(request.base_url).rstrip("/")
        return {
            "status_url": f"{base}/exports/{job_id}",
            "events_url": f"{base}/exports/{job_id}/events",
            "download_url": f"{base}/exports/{job_id}/download",
        }

    async def start_export(request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body() or b"{}")
        except msgspec.DecodeError as exc:
            return JSONResponse({"error": f"the body must be JSON: {exc}"}, status_code=422)
        rows = body.get("rows", 100_000) if isinstance(body, dict) else None
        if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= MAX_ROWS:
            return JSONResponse(
                {"error": f"'rows' must be an integer from 1 to {MAX_ROWS}, not {rows!r}"}, status_code=422
            )
        job = await engine.enqueue("export_csv", rows)
        urls = links(request, job.id)
        return JSONResponse({"id": job.id, **urls}, status_code=202, headers={"location": urls["status_url"]})

    async def find(job_id: str) -> Any:
        if not _JOB_ID.match(job_id):
            return None
        info = await engine.job(job_id).info()
        return info if info is not None and info.task == "export_csv" else None

    async def status(request: Request) -> Response:
        info = await find(request.path_params["job_id"])
        if info is None:
            return JSONResponse({"error": "no such export"}, status_code=404)
        out = {"id": info.id, "status": info.status, "progress": info.progress or 0.0, "error": info.error}
        if info.status == Status.COMPLETED:
            out.update(result=info.result, **links(request, info.id))
        return JSONResponse(out)

    async def events(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if await find(job_id) is None:
            return JSONResponse({"error": "no such export"}, status_code=404)
        download = links(request, job_id)["download_url"]
        return StreamingResponse(
            _progress_events(engine, job_id, download, poll_interval),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def download(request: Request) -> Response:
        info = await find(request.path_params["job_id"])
        if info is None:
            return JSONResponse({"error": "no such export"}, status_code=404)
        if info.status != Status.COMPLETED:
            return JSONResponse(
                {
                    "error": f"the export is not ready (status: {info.status})",
                    "progress": info.progress or 0.0,
                },
                status_code=409,
            )
        path = anyio.Path(target) / f"{info.id}.csv"
        if not await path.is_file():
            return JSONResponse({"error": "the export file is gone"}, status_code=410)
        return FileResponse(str(path), media_type="text/csv", filename=f"export-{info.id}.csv")

    async def home(request: Request) -> Response:
        return HTMLResponse(_HOME)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with engine:
            if not inline_worker:
                yield
                return
            worker = engine.worker(queues=["exports"], concurrency=4, handle_signals=False)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                try:
                    yield
                finally:
                    worker.stop()

    # The engine's dashboard, in the same service (Engine.dashboard() returns the same app).
    # Read-only unless ENGINE_DASHBOARD_TOKEN protects it.
    dashboard = create_app(engine, read_only=not os.environ.get("ENGINE_DASHBOARD_TOKEN"))
    return Starlette(
        routes=[
            Route("/", home),
            Route("/exports", start_export, methods=["POST"]),
            Route("/exports/{job_id}", status),
            Route("/exports/{job_id}/events", events),
            Route("/exports/{job_id}/download", download),
            Mount("/dashboard", dashboard),
        ],
        lifespan=lifespan,
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {msgspec.json.encode(data).decode()}\n\n".encode()


async def _progress_events(
    engine: Engine, job_id: str, download_url: str, interval: float
) -> AsyncIterator[bytes]:
    """A "progress" event whenever the progress moves, then "completed" or "failed"."""
    job = engine.job(job_id)
    last: float | None = None
    yield b"retry: 2000\n\n"
    while True:
        info = await job.info()
        if info is None:
            yield _sse("failed", {"status": "gone", "error": "the export no longer exists"})
            return
        progress = 1.0 if info.status == Status.COMPLETED else (info.progress or 0.0)
        if progress != last:
            yield _sse("progress", {"progress": progress, "status": str(info.status)})
            last = progress
        if info.status == Status.COMPLETED:
            yield _sse("completed", {"download_url": download_url, **(info.result or {})})
            return
        if info.status in (Status.FAILED, Status.CANCELLED):
            yield _sse("failed", {"status": str(info.status), "error": info.error})
            return
        # Wakes at once when the job finishes (pub/sub), else re-reads the progress.
        with suppress(TimeoutError, JobFailed):
            await job.result(timeout=interval)


_HOME = """<!doctype html><meta charset="utf-8"><title>Exports</title>
<h1>Export orders</h1>
<form id="f"><input name="rows" type="number" value="200000" min="1"> rows <button>Export</button></form>
<p><progress id="p" max="1" value="0"></progress> <span id="s"></span></p>
<p><a href="dashboard/">Dashboard</a></p>
<script>
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault();
  const rows = parseInt(new FormData(e.target).get("rows"), 10);
  const r = await fetch("exports", {method: "POST", body: JSON.stringify({rows})});
  const job = await r.json();
  const s = document.getElementById("s");
  if (!r.ok) { s.textContent = job.error; return; }
  const events = new EventSource(job.events_url);
  events.addEventListener("progress", (m) => {
    const d = JSON.parse(m.data);
    document.getElementById("p").value = d.progress;
    s.textContent = Math.round(d.progress * 100) + "% (" + d.status + ")";
  });
  events.addEventListener("completed", (m) => {
    events.close();
    const d = JSON.parse(m.data), a = document.createElement("a");
    a.href = d.download_url; a.textContent = "Download " + d.rows + " rows";
    s.replaceChildren(a);
  });
  events.addEventListener("failed", (m) => { events.close(); s.textContent = JSON.parse(m.data).error; });
};
</script>
"""

# For `python -m engine.worker examples.export_service:app` and `uvicorn examples.export_service:service`.
app = create_engine()
service = create_service(app)


def main() -> int:
    import uvicorn

    from engine.embedded import EmbeddedRedis

    server = None
    if not os.environ.get("ENGINE_REDIS_URL"):
        server = EmbeddedRedis()
        server.start()
        print(f"embedded Valkey at {server.url}")
    try:
        engine = create_engine(server.url if server else None)
        print("exports on http://127.0.0.1:8000/ (dashboard: /dashboard/)")
        uvicorn.run(create_service(engine, inline_worker=True), host="127.0.0.1", port=8000)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
