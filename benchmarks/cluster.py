"""Scale-out on a Redis/Valkey Cluster: what one queue costs each node, as queues are added.

    python -m benchmarks.cluster [--jobs 20000] [--rounds 1] [--concurrency 100]
                                 [--scenarios standalone,replicas,no-replicas,partitions]
                                 [--out benchmarks/RESULTS-cluster.md | --no-write]

Starts its own servers (engine.embedded, loopback, no persistence): a standalone Valkey, a
3-master cluster with one replica each, a 3-master cluster without replicas, and a small
standalone Valkey of its own for the probe (the counters and start gate of
benchmarks/suite/probe.py), so no measurement traffic reaches a measured node.

Scenarios, each a drain of ``--jobs`` no-op jobs, all waiting before the workers start:

- standalone: one queue, one worker process;
- cluster with replicas, K = 1, 2, 3 queues whose hash tags sit on K distinct masters;
- the same on the cluster without replicas;
- one queue with 3 partitions on 3 masters (``app.queue(name, partitions=3)``), on both
  clusters, when the engine has partitioned queues (else skipped with a note), each next to
  its control: 3 plain queues on 3 masters read by the same worker layout.

Workers: one ``python -m engine.worker`` process per queue (concurrency ``--concurrency``
each), as a deployment that scales out would run them (each process has one fetch loop, as
in the standalone case, so its CPU per job stays comparable as K grows); the partitioned
queue gets 3 processes, each reading every partition (workers share partitions through the
consumer group), and so does its control, each reading all 3 queues. On 2 cores K workers
and K masters share the same cores, so throughput cannot grow with K here: the per-node CPU
per job is what shows whether it would.

Reported per scenario (medians over ``--rounds``, interleaved): throughput; Valkey CPU us
per job for each node that served jobs (utime + stime of its valkey-server from
/proc/<pid>/stat, delta over the drain, divided by the jobs of the queues whose slots it
owns, or its master owns for a replica) and for the nodes that served none (divided by all
the jobs: what a job costs the rest of the cluster); worker CPU us per job (every worker
process's /proc delta over the drain, over all jobs); cluster-bus messages per job (delta of
``cluster_stats_messages_sent`` from CLUSTER INFO, summed over the nodes).

The drain window opens at the start gate (every worker process holds its first jobs) and
closes once every outcome is recorded (the queues' completed counters); throughput is the
jobs over the time from the gate to the last job body's end (as benchmarks/suite measures).
The jobs each worker holds at the gate (up to its concurrency) were read and started before
the window: their start is left out of the CPU figures (under 2% of the jobs by default).

This module is also the workers' app (``benchmarks.cluster:app``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from benchmarks.suite import probe
from benchmarks.suite.driver import ROOT, WorkerCommand, python
from benchmarks.suite.machine import describe
from benchmarks.suite.runner import Observer, Workers, start_workers
from benchmarks.support import cpu_readings, cpu_seconds, wait_until
from engine import Engine, JobContext
from engine.embedded import EmbeddedCluster, EmbeddedRedis, tags_on_distinct_masters
from engine.embedded.nodes import cluster_info, command

app = Engine()  # ENGINE_REDIS_URL and ENGINE_NAMESPACE, set by the benchmark for each drain


async def noop(ctx: JobContext, i: int) -> None:
    await probe.noop_async(i)  # the start gate, then counted


app.task(timeout=30)(noop)

NONE = "-"
RESULTS = ROOT / "benchmarks" / "RESULTS-cluster.md"
LOGS = ROOT / "benchmarks" / "results" / "cluster-logs"
SCENARIOS = ("standalone", "replicas", "no-replicas", "partitions")
CHUNK = 1000  # jobs per enqueue_many call (one script call each)
MAX_K = 3
PARTITIONS = 3
READY_TIMEOUT_S = 60.0
LONE_READY_S = 10.0  # one worker holding work this long while another has none: go anyway
DRAIN_CAP_S = 600.0


# --- servers ----------------------------------------------------------------------------


@dataclass
class Target:
    """A server or cluster under measurement: its nodes' ports and valkey-server pids."""

    name: str
    url: str
    pids: dict[int, int]
    cluster: EmbeddedCluster | None = None

    @property
    def masters(self) -> list[int]:
        return self.cluster.masters() if self.cluster else list(self.pids)

    def node_of(self, queue: str) -> int:
        """The port of the master that serves ``queue`` (its keys' hash tag ``{queue}``)."""
        return self.cluster.master_of("{" + queue + "}") if self.cluster else next(iter(self.pids))

    def replicas_of(self, port: int) -> list[int]:
        return self.cluster.replicas_of(port) if self.cluster else []

    def bus_sent(self) -> dict[int, dict[str, int]]:
        """Per node, CLUSTER INFO's ``cluster_stats_messages_sent`` (under "all") and its
        ``cluster_stats_messages_<type>_sent`` counters (by type); empty when standalone."""
        if self.cluster is None:
            return {}
        out: dict[int, dict[str, int]] = {}
        for port in self.pids:
            counters: dict[str, int] = {}
            for key, value in cluster_info(port).items():
                if key == "cluster_stats_messages_sent":
                    counters["all"] = int(value)
                elif key.startswith("cluster_stats_messages_") and key.endswith("_sent"):
                    counters[key.removeprefix("cluster_stats_messages_").removesuffix("_sent")] = int(value)
            out[port] = counters
        return out

    def flush(self) -> None:
        for port in self.masters:
            command(port, "FLUSHALL", "SYNC", timeout=30)


def _cluster_target(name: str, cluster: EmbeddedCluster) -> Target:
    pids = {node.port: node.pid for node in cluster.nodes if node.pid is not None}
    return Target(name, cluster.url, pids, cluster)


@dataclass
class Servers:
    probe: EmbeddedRedis = field(default_factory=EmbeddedRedis)
    started: list[EmbeddedRedis | EmbeddedCluster] = field(default_factory=list)
    targets: dict[str, Target] = field(default_factory=dict)

    def start(self, wanted: set[str]) -> None:
        self.probe.start()
        self.started.append(self.probe)
        if "standalone" in wanted:
            server = EmbeddedRedis()
            server.start()
            self.started.append(server)
            assert server.pid is not None
            self.targets["standalone"] = Target("standalone", server.url, {server.port: server.pid})
        for name, replicas in (("replicas", 1), ("no-replicas", 0)):
            if name in wanted:
                cluster = EmbeddedCluster(masters=MAX_K, replicas=replicas, appendonly=False)
                cluster.start()
                self.started.append(cluster)
                self.targets[name] = _cluster_target(name, cluster)

    def stop(self) -> None:
        for server in reversed(self.started):
            server.stop()


def revision() -> str:
    """The checkout measured: its commit, and whether files differ from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


def server_version(port: int) -> str:
    info = str(command(port, "INFO", "server"))
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    if "valkey_version" in fields:
        return f"Valkey {fields['valkey_version'].strip()}"
    return f"Redis {fields.get('redis_version', '?').strip()}"


# --- one drain ----------------------------------------------------------------------------


@dataclass
class Drain:
    """One drain's measurements."""

    jobs: int
    rate: float
    served: dict[int, int]  # port -> jobs of the queues it serves (a replica: its master's)
    valkey_cpu_s: dict[int, float]  # port -> CPU seconds over the drain
    worker_cpu_s: float  # every worker process, together
    bus_messages: int | None  # summed over the nodes; None on a standalone server
    bus_by_type: dict[str, int]  # the same by message type (ping, pong, publishshard, ...)
    workers: int
    placement: dict[str, int]  # physical queue -> the master serving it
    note: str = ""

    def us_per_job(self, port: int) -> float:
        jobs = self.served.get(port, 0) or self.jobs
        return 1e6 * self.valkey_cpu_s[port] / jobs


def partitions_supported() -> bool:
    """Whether this engine has partitioned queues: ``Engine.queue(name, partitions=K)``."""
    queue = getattr(Engine, "queue", None)
    return callable(queue) and "partitions" in inspect.signature(queue).parameters


# ===== HOOK: the drain of any queues, plain or partitioned ================================
# ``queues`` are queue names; ``partitions`` (with a single queue) declares that queue as K
# partitions before anything is enqueued (``app.queue(name, partitions=K)``), so the backlog
# is spread over them (round robin, a CHUNK at a time) and the workers read every partition.
# The "partitions" scenario is ``drain(target, ["events"], ..., partitions=3)``.
async def drain(
    target: Target,
    observer: Observer,
    queues: Sequence[str],
    *,
    jobs: int,
    concurrency: int,
    partitions: int | None = None,
    workers: int | None = None,
    label: str = "drain",
) -> Drain:
    """Enqueue ``jobs`` no-op jobs over ``queues`` (evenly), then drain them with worker
    processes: one per queue unless ``workers`` says how many (each then reads every queue)."""
    if partitions is not None and len(queues) != 1:
        raise ValueError("partitions apply to a single queue")
    namespace = f"cl{time.time_ns()}"
    producer = Engine(target.url, namespace=namespace)
    if partitions is not None:
        producer.queue(queues[0], partitions=partitions)
    task = producer.task(timeout=30)(noop)
    try:
        async with producer:
            gateway = await producer.ready()
            layout = getattr(producer, "layout", None)
            physical = layout.expand(queues) if layout is not None else list(queues)
            await _enqueue_backlog(task, queues, jobs, partitions or 1)
            sets = [[q] for q in queues] if workers is None else [list(queues)] * workers
            env = {
                "ENGINE_REDIS_URL": target.url,
                "ENGINE_NAMESPACE": namespace,
                "ENGINE_DATABASE_URL": "",  # never the job log, even if the caller's env has one
                "BENCH_PROBE_URL": observer.probe_url,
                "BENCH_GATE": "1",
            }
            commands = [WorkerCommand(_worker_argv(qs, concurrency)) for qs in sets]

            async def recorded() -> bool:
                counts = [(await gateway.queue_stats(p))["completed"] for p in physical]
                return sum(counts) >= jobs

            async with start_workers(commands, env, LOGS, label) as procs:
                note = await _wait_ready(observer, procs, len(commands))
                before = _snapshot(target, procs)
                t0 = time.time()
                await observer.open_gate()
                await _wait_alive(lambda: _done_at_least(observer, jobs), procs, DRAIN_CAP_S, 0.02)
                await _wait_alive(recorded, procs, 60, 0.02)
                after = _snapshot(target, procs)
                rate = jobs / max(await observer.last_done_at() - t0, 1e-6)
            completed = {p: (await gateway.queue_stats(p))["completed"] for p in physical}
    finally:
        target.flush()
        await observer.flush()
    placement = {p: target.node_of(p) for p in physical}
    served: dict[int, int] = {}
    for queue, port in placement.items():
        served[port] = served.get(port, 0) + completed[queue]
    for port in list(served):
        for replica in target.replicas_of(port):
            served[replica] = served[port]
    bus = None
    by_type: dict[str, int] = {}
    if before.bus:
        for port, counters in after.bus.items():
            for kind, value in counters.items():
                by_type[kind] = by_type.get(kind, 0) + value - before.bus[port].get(kind, 0)
        bus = by_type.pop("all", 0)
    return Drain(
        jobs=jobs,
        rate=rate,
        served=served,
        valkey_cpu_s={p: after.valkey[p] - before.valkey[p] for p in before.valkey},
        worker_cpu_s=sum(after.workers.values()) - sum(before.workers.values()),
        bus_messages=bus,
        bus_by_type=by_type,
        workers=len(commands),
        placement=placement,
        note=note,
    )


# ===== end of the hook =====================================================================


async def _enqueue_backlog(task: object, queues: Sequence[str], jobs: int, partitions: int) -> None:
    """``jobs`` spread evenly over ``queues``, in enqueue_many calls of CHUNK jobs (smaller
    for a small partitioned backlog: each call goes to the next partition, and every
    partition should get several)."""
    share, extra = divmod(jobs, len(queues))
    i = 0
    for n, queue in enumerate(queues):
        call = task.with_options(queue=queue)  # type: ignore[attr-defined]
        count = share + (1 if n < extra else 0)
        chunk = min(CHUNK, max(1, -(-count // (4 * partitions))) if partitions > 1 else CHUNK)
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            await call.enqueue_many([(i + k,) for k in range(size)])
            i += size


def _worker_argv(queues: Sequence[str], concurrency: int) -> list[str]:
    return [
        python(), "-m", "engine.worker", "benchmarks.cluster:app",
        "--queues", ",".join(queues),
        "--concurrency", str(concurrency),
        "--no-cron", "--log-level", "warning",
    ]  # fmt: skip


@dataclass
class _Snapshot:
    valkey: dict[int, float]
    workers: dict[str, float]
    bus: dict[int, dict[str, int]]


def _snapshot(target: Target, procs: Workers) -> _Snapshot:
    return _Snapshot(
        valkey={port: cpu_seconds(pid) for port, pid in target.pids.items()},
        workers=cpu_readings({str(p.pid): p.pid for p in procs.procs}),
        bus=target.bus_sent(),
    )


async def _done_at_least(observer: Observer, jobs: int) -> bool:
    return await observer.done() >= jobs


async def _wait_alive(check, procs: Workers, timeout: float, interval: float) -> None:  # type: ignore[no-untyped-def]
    async def ok() -> bool:
        if not procs.alive():
            raise RuntimeError(f"a worker process exited; see {LOGS}")
        return bool(await check())

    await wait_until(ok, timeout, interval)


async def _wait_ready(observer: Observer, procs: Workers, expected: int) -> str:
    """Until every worker process holds work at the start gate (or one has for
    LONE_READY_S while another still has none: a note says so)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    first_at: float | None = None
    while True:
        if not procs.alive():
            raise RuntimeError(f"a worker process exited before the drain; see {LOGS}")
        ready = await observer.ready()
        if ready >= expected:
            return ""
        now = time.monotonic()
        if ready and first_at is None:
            first_at = now
        if first_at is not None and now - first_at > LONE_READY_S:
            return f"only {ready} of {expected} worker processes held work at the gate"
        if now > deadline:
            raise TimeoutError(f"no worker process held work within {READY_TIMEOUT_S:.0f}s; see {LOGS}")
        await anyio.sleep(0.01)


# --- scenarios ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    server: str  # a Servers.targets key
    queues: int
    partitions: int | None = None
    shared: bool = False  # every worker process reads every queue (else one per queue)

    @property
    def title(self) -> str:
        if self.server == "standalone":
            return "standalone server"
        kind = "cluster, 1 replica each" if self.server == "replicas" else "cluster, no replicas"
        if self.partitions:
            return f"{kind}: 1 queue, {self.partitions} partitions"
        if self.shared:
            return f"{kind}: {self.queues} queues, every worker on all"
        return f"{kind}: {self.queues} queue{'s' if self.queues > 1 else ''}"


def plan(chosen: Sequence[str]) -> list[Scenario]:
    out: list[Scenario] = []
    if "standalone" in chosen:
        out.append(Scenario("standalone", "standalone", 1))
    for server in ("replicas", "no-replicas"):
        if server in chosen:
            out += [Scenario(f"{server}-k{k}", server, k) for k in range(1, MAX_K + 1)]
    if "partitions" in chosen:
        for server in ("replicas", "no-replicas"):
            out.append(Scenario(f"{server}-p{PARTITIONS}", server, 1, PARTITIONS))
            # The control: the same worker layout (each process reads every queue) over
            # plain queues, so what differs from the row above is partitioning alone.
            out.append(Scenario(f"{server}-k{PARTITIONS}-shared", server, PARTITIONS, shared=True))
    return out


async def run_scenario(
    servers: Servers, observer: Observer, scenario: Scenario, args: argparse.Namespace
) -> Drain:
    target = servers.targets[scenario.server]
    if scenario.partitions:
        # The partitioned queue is served by as many worker processes as the K-queue case.
        return await drain(
            target,
            observer,
            ["events"],
            jobs=args.jobs,
            concurrency=args.concurrency,
            partitions=scenario.partitions,
            workers=scenario.partitions,
            label=scenario.key,
        )
    if target.cluster is None:
        queues = ["default"]
    else:
        queues = tags_on_distinct_masters(target.cluster, MAX_K, prefix="bench")[: scenario.queues]
    return await drain(
        target,
        observer,
        queues,
        jobs=args.jobs,
        concurrency=args.concurrency,
        workers=len(queues) if scenario.shared else None,
        label=scenario.key,
    )


# --- the report ---------------------------------------------------------------------------


@dataclass
class Row:
    scenario: Scenario
    drains: list[Drain]

    @property
    def first(self) -> Drain:
        return self.drains[0]

    def median(self, values: Sequence[float]) -> float:
        return statistics.median(values)

    @property
    def rate(self) -> float:
        return self.median([d.rate for d in self.drains])

    def node_us(self, port: int) -> float:
        return self.median([d.us_per_job(port) for d in self.drains])

    @property
    def worker_us(self) -> float:
        return self.median([1e6 * d.worker_cpu_s / d.jobs for d in self.drains])

    @property
    def bus_per_job(self) -> float | None:
        values = [d.bus_messages / d.jobs for d in self.drains if d.bus_messages is not None]
        return self.median(values) if values else None

    def ports(self, target: Target) -> tuple[list[int], list[int], list[int]]:
        """(serving masters, their replicas, the other nodes), each in port order."""
        placement = self.first.placement
        masters = sorted(set(placement.values()))
        replicas = sorted(r for m in masters for r in target.replicas_of(m))
        others = sorted(set(target.pids) - set(masters) - set(replicas))
        return masters, replicas, others


def _values(row: Row, ports: Sequence[int]) -> str:
    return " / ".join(f"{row.node_us(p):.0f}" for p in ports) if ports else NONE


def table(rows: Sequence[Row], servers: Servers) -> str:
    head = (
        "| scenario | queues → masters | worker processes | jobs/s | vs standalone "
        "| Valkey µs/job: serving masters | their replicas | other nodes (µs per job drained) "
        "| worker µs/job | cluster-bus msgs/job |"
    )
    lines = [head, "|" + "---|" * 10]
    base = next((r.rate for r in rows if r.scenario.server == "standalone"), None)
    for row in rows:
        target = servers.targets[row.scenario.server]
        masters, replicas, others = row.ports(target)
        placed = len(row.first.placement)
        what = f"{placed} partitions" if row.scenario.partitions else f"{placed}"
        vs = f"{row.rate / base:.2f}x" if base else NONE
        bus = NONE if row.bus_per_job is None else f"{row.bus_per_job:.3f}"
        lines.append(
            f"| {row.scenario.title} | {what} → {len(masters)} | {row.first.workers} "
            f"| {row.rate:,.0f} | {vs} "
            f"| {_values(row, masters)} | {_values(row, replicas)} | {_values(row, others)} "
            f"| {row.worker_us:.0f} | {bus} |"
        )
    return "\n".join(lines)


def bus_table(rows: Sequence[Row]) -> str:
    """Cluster-bus messages per job by type (medians), for the cluster scenarios."""
    clustered = [r for r in rows if r.bus_per_job is not None]
    kinds = sorted({k for r in clustered for d in r.drains for k, v in d.bus_by_type.items() if v})
    if not kinds:
        return ""
    lines = ["| scenario | " + " | ".join(kinds) + " |", "|" + "---|" * (len(kinds) + 1)]
    for row in clustered:
        cells = [f"{row.median([d.bus_by_type.get(k, 0) / d.jobs for d in row.drains]):.3f}" for k in kinds]
        lines.append(f"| {row.scenario.title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(rows: Sequence[Row], servers: Servers, args: argparse.Namespace, machine: dict[str, str]) -> str:
    notes = sorted({d.note for r in rows for d in r.drains if d.note})
    skipped = getattr(args, "skipped", "")
    version = server_version(servers.probe.port)
    text = [
        "# Cluster scale-out benchmark (latest run)",
        "",
        f"`{args.command}`: {args.jobs:,} no-op jobs per drain, {args.rounds} round(s) interleaved "
        f"(medians), concurrency {args.concurrency} per worker process; {version}, every node on "
        f"loopback without persistence. {args.started_at}, {revision()}.",
        "",
        f"Machine: {machine['nproc']} cores ({machine['cpu']}), load average at start "
        f"{machine['load_at_start']}, {machine['python']}, {machine['os']}. The cores are shared by "
        "every node, worker and the producer (and whatever else ran): compare within this run.",
        "",
        table(rows, servers),
        "",
    ]
    if bus_table(rows):
        text += [
            "Cluster-bus messages sent per job, by type (`cluster_stats_messages_<type>_sent`):",
            "",
            bus_table(rows),
            "",
        ]
    text += [
        "How to read it (see `benchmarks/cluster.py` for the method):",
        "",
        "- *Valkey µs/job*: CPU (utime + stime from `/proc/<pid>/stat`) each valkey-server spent "
        "over the drain, divided by the jobs of the queues it serves (a replica: its master's); one "
        "value per node, in port order. *Other nodes*: the CPU of nodes serving none of these queues, "
        "divided by all the jobs drained (cluster gossip and anything broadcast to every node).",
        "- *Worker µs/job*: the CPU of every worker process over the drain, over all jobs.",
        "- *Cluster-bus msgs/job*: `cluster_stats_messages_sent` summed over the nodes, delta over "
        "the drain, per job (gossip adds a time-based floor).",
        "- One worker process per queue; the partitioned queue and its control (*every worker on all*) "
        "get as many processes, each reading every partition or queue, so those two rows differ by "
        "partitioning alone. With more processes than cores, throughput cannot grow with K here; "
        "per-node CPU per job staying flat is what says K masters give K times one master's capacity.",
        "- *publishshard* messages are sharded pub/sub (SPUBLISH) a master forwards to the replicas of "
        "its shard over the cluster bus; *ping*/*pong* are gossip.",
    ]
    if skipped:
        text.append(f"- {skipped}")
    text += [f"- {note}" for note in notes]
    return "\n".join(text) + "\n"


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20,000)")
    parser.add_argument("--rounds", type=int, default=1, help="repetitions of every scenario, interleaved")
    parser.add_argument("--concurrency", type=int, default=100, help="per worker process")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)}"
    )
    parser.add_argument("--out", default=str(RESULTS), help="the Markdown report to write")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--jobs, --rounds and --concurrency must be >= 1")
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.chosen = chosen
    args.command = "python -m benchmarks.cluster " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    args.command = args.command.strip()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.skipped = ""
    if "partitions" in args.chosen and not partitions_supported():
        args.skipped = (
            "skipped: 1 queue with 3 partitions (this engine has no Engine.queue(name, partitions=K))"
        )
        print(args.skipped)
        args.chosen = [s for s in args.chosen if s != "partitions"]
    scenarios = plan(args.chosen)
    if not scenarios:
        print("nothing to run")
        return 0
    machine = describe()
    args.started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    servers = Servers()
    try:
        servers.start({s.server for s in scenarios})
        rows = anyio.run(_measure, servers, scenarios, args)
        text = report(rows, servers, args, machine)
    finally:
        servers.stop()
    print(table_of(text))
    if not args.no_write:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


def table_of(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


async def _measure(servers: Servers, scenarios: Sequence[Scenario], args: argparse.Namespace) -> list[Row]:
    observer = Observer(servers.probe.url)
    rows = {s.key: Row(s, []) for s in scenarios}
    try:
        await observer.flush()
        for rnd in range(args.rounds):
            for scenario in scenarios:  # interleaved: a slow spell of the machine hits all alike
                result = await run_scenario(servers, observer, scenario, args)
                rows[scenario.key].drains.append(result)
                print(
                    f"  round {rnd + 1}: {scenario.title:42} {result.rate:8,.0f} jobs/s, "
                    f"worker {1e6 * result.worker_cpu_s / result.jobs:4.0f} us/job",
                    flush=True,
                )
    finally:
        await observer.close()
    return list(rows.values())


if __name__ == "__main__":
    raise SystemExit(main())
