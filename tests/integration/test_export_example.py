"""examples/export_service.py end to end over real HTTP: request an export (202 and a job id),
follow its progress over server-sent events to the completion event, download the CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from engine.dashboard.server import serving
from engine.testing import worker_running
from examples.export_service import create_engine, create_service


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream response, as they arrive."""
    event, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and data:
            yield event, json.loads(data)
            event, data = "message", ""


@pytest.fixture
async def export_app(redis_url: str, namespace: str, tmp_path: Path) -> AsyncIterator[Any]:
    # Ten chunks, each 0.1 s "from the database": slow enough to see progress move.
    engine = create_engine(redis_url, namespace, directory=tmp_path, chunk_rows=2_000, query_latency=0.1)
    yield engine
    await engine.close()


async def test_request_progress_completion_and_download(export_app: Any, tmp_path: Path) -> None:
    engine = export_app
    service = create_service(engine, directory=tmp_path, poll_interval=0.05)
    async with engine, serving(service) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        accepted = await client.post("/exports", json={"rows": 20_000})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        assert accepted.headers["location"] == f"{url}/exports/{job_id}"
        assert accepted.json()["events_url"] == f"{url}/exports/{job_id}/events"

        # No worker yet: the export waits, and its file is not ready.
        assert (await client.get(f"/exports/{job_id}")).json()["status"] == "waiting"
        early = await client.get(f"/exports/{job_id}/download")
        assert early.status_code == 409 and "not ready" in early.json()["error"]

        seen: list[tuple[str, dict[str, Any]]] = []
        async with (
            worker_running(engine, queues=["exports"]),
            client.stream("GET", f"/exports/{job_id}/events") as stream,
        ):
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for event, data in sse_events(stream):
                seen.append((event, data))
                if event in ("completed", "failed"):
                    break

        kinds = [event for event, _ in seen]
        assert kinds[-1] == "completed", seen
        progress = [data["progress"] for event, data in seen if event == "progress"]
        assert progress == sorted(progress) and len(set(progress)) == len(progress)
        assert len([p for p in progress if 0 < p < 1]) >= 3, progress  # it moved, in steps
        assert progress[-1] == 1.0
        done = seen[-1][1]
        assert done["rows"] == 20_000 and done["download_url"] == f"{url}/exports/{job_id}/download"

        response = await client.get(done["download_url"])
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert f'filename="export-{job_id}.csv"' in response.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(response.text)))
        assert rows[0] == ["order_id", "customer", "amount_cents", "currency"]
        assert len(rows) == 20_001 and rows[-1][0] == "19999"
        assert int(response.headers["content-length"]) == done["bytes"]
        parts = [p async for p in anyio.Path(tmp_path).glob("*.part")]
        assert parts == []  # written aside, renamed when complete

        status = (await client.get(f"/exports/{job_id}")).json()
        assert status["status"] == "completed" and status["progress"] == 1.0

        # The job is visible in the mounted dashboard, with its log lines.
        detail = (await client.get(f"/dashboard/api/jobs/{job_id}")).json()
        assert detail["status"] == "completed" and "exporting 20000 rows" in detail["logs"][0]["message"]


async def test_bad_requests(export_app: Any, tmp_path: Path) -> None:
    service = create_service(export_app, directory=tmp_path)
    async with export_app, serving(service) as url, httpx.AsyncClient(base_url=url) as client:
        for body in (b'{"rows": 0}', b'{"rows": "many"}', b'{"rows": 100000000}', b"[1]", b'{"rows": true}'):
            response = await client.post("/exports", content=body)
            assert response.status_code == 422 and "'rows' must be an integer" in response.json()["error"], (
                body
            )
        not_json = await client.post("/exports", content=b"rows=5")
        assert not_json.status_code == 422 and "must be JSON" in not_json.json()["error"]
        for path in (
            "/exports/01ABCDEFGHJKMNPQRSTVWXYZ00",
            "/exports/..%2F..%2Fetc%2Fpasswd/download",
            "/exports/x/events",
        ):
            assert (await client.get(path)).status_code == 404, path
        # A deleted export is gone.
        other = await export_app.enqueue("export_csv", 5)
        await other.delete()
        assert (await client.get(f"/exports/{other.id}/download")).status_code == 404
