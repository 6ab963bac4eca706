"""``python -m engine demo``: the whole engine on one machine with nothing installed.

Starts an embedded Valkey (data under ``--data-dir``), a worker process running
``examples/demo_app.py``, enqueues a mix of jobs, shows live progress, prints a summary and
stops everything it started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anyio

from engine.app import Engine
from engine.embedded import EmbeddedRedis, EmbeddedServerError

REPO_ROOT = Path(__file__).resolve().parent.parent
BAR_WIDTH = 30


def _examples_dir() -> Path:
    here = REPO_ROOT / "examples" / "demo_app.py"
    if not here.exists():
        raise FileNotFoundError(
            f"the demo needs examples/demo_app.py from the source tree (looked in {REPO_ROOT}); "
            "run it from a checkout installed with pip install -e ."
        )
    return REPO_ROOT


def run_demo(jobs: int, data_dir: str) -> int:
    try:
        root = _examples_dir()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = Path(data_dir).resolve() / "valkey"
    data.mkdir(parents=True, exist_ok=True)
    print(f"starting an embedded Valkey (data in {data}) ...")
    try:
        server = EmbeddedRedis(data, appendonly=True)
        server.start()
    except EmbeddedServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    namespace = f"demo{int(time.time())}"
    env = {
        **os.environ,
        "ENGINE_REDIS_URL": server.url,
        "ENGINE_NAMESPACE": namespace,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    worker = None
    try:
        print(
            f"valkey at {server.url}; starting a worker: python -m engine.worker "
            "examples.demo_app:app --concurrency 50"
        )
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.worker",
                "examples.demo_app:app",
                "--concurrency",
                "50",
                "--log-level",
                "warning",
            ],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return anyio.run(_produce_and_watch, server.url, namespace, jobs, worker, root)
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(30)
        server.stop()
        print("stopped the worker and the embedded Valkey.")


async def _produce_and_watch(
    url: str, namespace: str, total: int, worker: subprocess.Popen[bytes], root: Path
) -> int:
    sys.path.insert(0, str(root))
    os.environ["ENGINE_REDIS_URL"] = url
    os.environ["ENGINE_NAMESPACE"] = namespace
    from examples import demo_app

    app: Engine = demo_app.app
    started = time.monotonic()
    async with app:
        share = max(1, total // 4)
        await demo_app.make_thumbnail.enqueue_many([(i,) for i in range(share)])
        await demo_app.checksum.enqueue_many([(f"document {i}",) for i in range(share)])
        await demo_app.send_email.enqueue_many([(f"user{i}@example.com",) for i in range(share)])
        bad_orders = max(1, share // 50)
        rest = total - 3 * share
        await demo_app.charge_card.enqueue_many([(i, -100 if i < bad_orders else 1999) for i in range(rest)])
        enqueued_in = time.monotonic() - started
        print(f"enqueued {total} jobs in {enqueued_in * 1000:.0f} ms; processing ...")
        while True:
            stats = await app.stats()
            done = sum(s["completed"] + s["failed"] for s in stats.values())
            _draw(done, total, stats)
            if done >= total:
                break
            if worker.poll() is not None:
                err = worker.stderr.read().decode() if worker.stderr else ""
                print(f"\nerror: the worker exited early (code {worker.returncode})\n{err}", file=sys.stderr)
                return 1
            await anyio.sleep(0.2)
        elapsed = time.monotonic() - started
        print()
        _summary(stats, total, elapsed)
        gateway = app._gateway_or_connect()
        sample = await gateway.redis.xrange(gateway.keys.queue("emails").dlq, count=1)
        if sample:
            job = await app.job(sample[0][1]["j"], "emails").info()
            if job is not None:
                print(f"example failed job {job.id} ({job.task}{tuple(job.args)}): {job.error}")
    return 0


def _draw(done: int, total: int, stats: dict[str, dict[str, int]]) -> None:
    filled = int(BAR_WIDTH * done / total)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    active = sum(s["active"] for s in stats.values())
    delayed = sum(s["delayed"] for s in stats.values())
    failed = sum(s["failed"] for s in stats.values())
    line = f"\r[{bar}] {done}/{total}  active {active:3d}  retrying {delayed:3d}  failed {failed:3d}"
    print(line, end="", flush=True)


def _summary(stats: dict[str, dict[str, int]], total: int, elapsed: float) -> None:
    print(f"\nsummary: {total} jobs in {elapsed:.2f} s ({total / elapsed:,.0f} jobs/s end to end)")
    print(f"  {'queue':10} {'completed':>10} {'failed':>8} {'retries':>8} {'dead-letter':>12}")
    for queue, s in stats.items():
        print(f"  {queue:10} {s['completed']:>10} {s['failed']:>8} {s['retried']:>8} {s['dlq']:>12}")
    print("failed jobs stay in each queue's dead-letter stream for inspection and replay.")
