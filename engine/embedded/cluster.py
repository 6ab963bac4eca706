"""An embedded Redis/Valkey Cluster: masters and replicas as EmbeddedRedis nodes on loopback, one temp dir."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from engine.embedded.nodes import (
    BUS_PORT_OFFSET,
    SLOTS,
    NodeLine,
    cluster_info,
    cluster_nodes,
    command,
    find_cli,
    free_cluster_port,
    key_slot,
)
from engine.embedded.redis import EmbeddedRedis, find_redis_server
from engine.embedded.server import (
    ADDR_IN_USE,
    PORT_ATTEMPTS,
    EmbeddedServerError,
    Lifetime,
    log_tail,
)

NODE_TIMEOUT_MS = 2000
# valkey-cli --cluster create sleeps a second by itself before it waits for the join.
CREATE_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
FAILOVER_TIMEOUT = 20.0
POLL_INTERVAL = 0.05


class EmbeddedCluster(Lifetime):
    """A Redis/Valkey Cluster of ``masters * (1 + replicas)`` nodes on free loopback ports.

    ``replicas`` per master (0: masters only). ``appendonly`` (default) keeps every write in
    an fsynced AOF, so a node killed and restarted loses nothing; ``appendonly=False`` keeps
    data in memory only (as a standalone EmbeddedRedis does), for benchmarks: a restarted
    node then comes back empty.
    """

    def __init__(
        self, *, masters: int = 3, replicas: int = 1, appendonly: bool = True, binary: str | None = None
    ) -> None:
        if masters < 3:
            raise ValueError("a cluster needs at least 3 masters")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.n_masters = masters
        self.n_replicas = replicas
        self.appendonly = appendonly
        self.binary = binary
        self.nodes: list[EmbeddedRedis] = []
        self.root: Path | None = None
        self.startup_seconds: float | None = None
        # The last healthy topology seen (replica port -> master port): once a master is
        # killed and its replica promoted, nobody in the cluster remembers who replaced whom.
        self._replica_of: dict[int, int] = {}

    # --- lifetime ------------------------------------------------------------------------

    def start(self) -> None:
        """Start every node, create the cluster and wait until it is fully up; idempotent."""
        if self.root is not None:
            return
        began = time.monotonic()
        binary = self.binary or find_redis_server()
        cli = find_cli(binary)
        self.root = Path(tempfile.mkdtemp(prefix="engine-cluster-"))
        self.nodes = []
        self._replica_of = {}
        self._register_atexit()
        try:
            used: list[int] = []
            for index in range(self.n_masters * (1 + self.n_replicas)):
                node = self._spawn_node(index, binary, used)
                self.nodes.append(node)
                used += [node.port, node.port + BUS_PORT_OFFSET]
            self._create(cli)
            self.wait_ok(READY_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def _node_args(self) -> list[str]:
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # The default waits 5 s for more replicas before a diskless full sync starts:
            # start-up and every rejoin would take that long.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip

    def _spawn_node(self, index: int, binary: str, used: list[int]) -> EmbeddedRedis:
        assert self.root is not None
        node_dir = self.root / f"node-{index}"
        error: EmbeddedServerError | None = None
        for _ in range(PORT_ATTEMPTS):
            # A failed attempt may have written nodes.conf under its port already.
            shutil.rmtree(node_dir, ignore_errors=True)
            node = EmbeddedRedis(
                node_dir,
                port=free_cluster_port(used),
                appendonly=self.appendonly,
                binary=binary,
                extra_args=self._node_args(),
            )
            try:
                node.start()
            except EmbeddedServerError as exc:
                node.stop()
                error = exc
                # Port or bus port taken between the check and the bind: pick another pair.
                if ADDR_IN_USE not in str(exc):
                    raise
                continue
            return node
        assert error is not None
        raise error

    def _create(self, cli: str) -> None:
        assert self.root is not None
        argv = [
            cli, "--cluster", "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas", str(self.n_replicas),
            "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=CREATE_TIMEOUT,
                cwd=self.root,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedServerError(f"{cli} --cluster create failed: {exc}") from exc
        output = (done.stdout + done.stderr).decode("utf-8", "replace")
        (self.root / "create.log").write_text(output)
        if done.returncode != 0:
            tail = "\n".join(output.splitlines()[-20:])
            raise EmbeddedServerError(
                f"{cli} --cluster create exited with {done.returncode}:\n{tail}\n"
                f"first node's log tail ({self.nodes[0].log_file}):\n{log_tail(self.nodes[0].log_file)}"
            )

    def stop(self) -> None:
        """Stop every node and remove the temp dir; idempotent."""
        # Replicas first: SHUTDOWN on a master waits (up to shutdown-timeout, 10 s) for
        # replicas that are still catching up.
        masters = set(self.masters()) if self.root is not None else set()
        for node in sorted(self.nodes, key=lambda node: node.port in masters):
            node.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self._unregister_atexit()

    # --- addresses -----------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The first node's URL: a cluster client discovers the rest from it."""
        if not self.nodes:
            raise EmbeddedServerError("the cluster is not started")
        return self.nodes[0].url

    def node(self, port: int) -> EmbeddedRedis:
        """The node listening on ``port``."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def restart_node(self, index: int, timeout: float = READY_TIMEOUT) -> None:
        """Start node ``index`` again (after kill() or stop()) and wait until it has rejoined."""
        self.nodes[index].start()
        self.wait_ok(timeout)

    # --- topology ------------------------------------------------------------------------

    def _myself(self) -> dict[int, NodeLine]:
        """What each running, reachable node says about itself."""
        lines: dict[int, NodeLine] = {}
        for node in self.nodes:
            if not node.running:
                continue
            try:
                view = cluster_nodes(node.port)
            except (OSError, EmbeddedServerError):
                continue  # dying or still loading: it owns nothing right now
            for line in view:
                if "myself" in line.flags:
                    lines[node.port] = line
        return lines

    def slot_owners(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, port) for each running master's own slot ranges."""
        return sorted(
            (low, high, port)
            for port, line in self._myself().items()
            if line.is_master
            for low, high in line.slots
        )

    def masters(self) -> list[int]:
        """Ports of the running nodes that are masters owning slots now."""
        return sorted({port for _, _, port in self.slot_owners()})

    def replicas_of(self, master_port: int) -> list[int]:
        """Ports of the running nodes that replicate the node on ``master_port`` now."""
        myself = self._myself()
        master = myself.get(master_port)
        if master is None:
            return []
        return sorted(port for port, line in myself.items() if line.master_id == master.node_id)

    def master_of(self, key: str | bytes) -> int:
        """Port of the running master that owns the slot of ``key``."""
        slot = key_slot(key)
        for low, high, port in self.slot_owners():
            if low <= slot <= high:
                return port
        raise EmbeddedServerError(f"no running master owns slot {slot}")

    # --- waiting -------------------------------------------------------------------------

    def _health(self) -> tuple[str, EmbeddedRedis | None] | None:
        """None when the cluster is fully up, else why not and the node to blame."""
        running = [node for node in self.nodes if node.running]
        if not running:
            return "no node is running", None
        running_ports = {node.port for node in running}
        owner_views: set[frozenset[tuple[int, tuple[tuple[int, int], ...]]]] = set()
        replica_of: dict[int, int] = {}
        for node in running:
            try:
                info = cluster_info(node.port)
                view = cluster_nodes(node.port)
                role = command(node.port, "ROLE")
            except (OSError, EmbeddedServerError) as exc:
                return f"node {node.port} did not answer: {exc}", node
            if info.get("cluster_state") != "ok":
                return f"node {node.port}: cluster_state:{info.get('cluster_state')}", node
            if info.get("cluster_known_nodes") != str(len(self.nodes)):
                known = info.get("cluster_known_nodes")
                return f"node {node.port} knows {known} of {len(self.nodes)} nodes", node
            by_id = {line.node_id: line for line in view}
            for line in view:
                if line.flags & {"handshake", "noaddr"}:
                    return f"node {node.port} still meets {line.port}", node
                if line.port in running_ports and line.failing:
                    return f"node {node.port} flags running node {line.port} {sorted(line.flags)}", node
                if line.is_master and line.slots and line.port not in running_ports:
                    return f"node {node.port} still sees dead {line.port} as a slot owner", node
                master = by_id.get(line.master_id or "")
                if master is not None and not line.is_master:
                    replica_of[line.port] = master.port
            owners = frozenset((line.port, line.slots) for line in view if line.is_master and line.slots)
            owner_views.add(owners)
            # A replica still syncing could not take over if its master died now.
            if isinstance(role, list) and role and role[0] == "slave" and role[3] != "connected":
                return f"replica {node.port} link to its master is {role[3]}", node
        if len(owner_views) != 1:
            return "the nodes disagree about who owns which slots", None
        covered = sum(high - low + 1 for _, slots in next(iter(owner_views)) for low, high in slots)
        if covered != SLOTS:
            return f"{covered} of {SLOTS} slots are owned", None
        self._replica_of = replica_of
        return None

    def wait_ok(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until every running node says cluster_state:ok, knows every node, agrees on
        the slot owners (all running) and every replica is in sync with its master."""
        deadline = time.monotonic() + timeout
        while True:
            problem = self._health()
            if problem is None:
                return
            if time.monotonic() >= deadline:
                self._fail(f"the cluster was not ok within {timeout:.1f}s: {problem[0]}", problem[1])
            time.sleep(POLL_INTERVAL)

    def wait_for_failover(self, old_master_port: int, timeout: float = FAILOVER_TIMEOUT) -> int:
        """Wait until a replica of the master on ``old_master_port`` is master and the
        cluster is ok again; the port of that new master."""
        candidates = {port for port, master in self._replica_of.items() if master == old_master_port}
        candidates.update(self.replicas_of(old_master_port))
        if not candidates:
            raise EmbeddedServerError(f"no replica of {old_master_port} is known: nothing can take over")
        deadline = time.monotonic() + timeout
        while True:
            promoted = sorted(candidates & set(self.masters()))
            if promoted:
                problem = self._health()
                if problem is None:
                    return promoted[0]
            else:
                problem = (f"no replica of {old_master_port} ({sorted(candidates)}) is master yet", None)
            if time.monotonic() >= deadline:
                blame = problem[1] or self.node(min(candidates))
                self._fail(f"no failover of {old_master_port} within {timeout:.1f}s: {problem[0]}", blame)
            time.sleep(POLL_INTERVAL)

    def _fail(self, message: str, node: EmbeddedRedis | None) -> None:
        node = node or (self.nodes[0] if self.nodes else None)
        if node is not None:
            message += f"\nlog tail ({node.log_file}):\n{log_tail(node.log_file)}"
        raise EmbeddedServerError(message)


def tags_on_distinct_masters(cluster: EmbeddedCluster, n: int, prefix: str = "q") -> list[str]:
    """``n`` names (``q0``, ``q7``, ...) whose hash tags ``{name}`` hash to slots owned by ``n``
    distinct masters: queue names that spread a test over the cluster's masters."""
    owners = cluster.slot_owners()
    if n > len({port for _, _, port in owners}):
        raise ValueError(f"the cluster has fewer than {n} masters")
    chosen: dict[int, str] = {}
    for i in range(100_000):
        name = f"{prefix}{i}"
        slot = key_slot("{" + name + "}")
        port = next((port for low, high, port in owners if low <= slot <= high), None)
        if port is not None:
            chosen.setdefault(port, name)
            if len(chosen) == n:
                return list(chosen.values())
    raise EmbeddedServerError(f"no {n} names with prefix {prefix!r} on distinct masters")
