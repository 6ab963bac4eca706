"""An embedded Redis Sentinel set: a master, a replica and their sentinels on loopback, one temp dir."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import NoReturn

from engine.embedded.nodes import Reply, command
from engine.embedded.redis import EmbeddedRedis, find_redis_server
from engine.embedded.server import (
    ADDR_IN_USE,
    PORT_ATTEMPTS,
    EmbeddedServerError,
    Lifetime,
    free_port,
    log_tail,
)

DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
READY_TIMEOUT = 30.0
FAILOVER_TIMEOUT = 20.0
POLL_INTERVAL = 0.05
# Runtime knobs (SENTINEL DEBUG, not settable in the config file). The defaults suit
# production, not tests: sentinels meet each other through hellos sent every 2 s, look at a
# replica every 10 s and wait 4 hello periods before they turn a restarted old master into a
# replica, so start-up and a rejoin would take 2-20 s. A stall of 2 s (a loaded CI box) puts a
# sentinel in TILT mode, where it refuses to fail over for 30 s: 5 s is enough of a pause.
SENTINEL_DEBUG = ("publish-period", "250", "info-period", "1000", "tilt-period", "5000")


class _SentinelProcess(EmbeddedRedis):
    """A valkey-server in sentinel mode: its config file (which it rewrites) is all it takes."""

    @property
    def config_file(self) -> Path:
        return self.data_dir / "sentinel.conf"

    def _argv(self, binary: str) -> list[str]:
        return [binary, str(self.config_file), "--sentinel"]


def _fields(reply: Reply) -> dict[str, str]:
    """A flat [key, value, ...] reply as a dict: SENTINEL MASTER, one entry of SENTINEL REPLICAS."""
    items = reply if isinstance(reply, list) else []
    return {str(key): str(value) for key, value in zip(items[::2], items[1::2], strict=True)}


def _info(port: int, section: str) -> dict[str, str]:
    pairs = (line.partition(":") for line in str(command(port, "INFO", section)).splitlines())
    return {key: value.strip() for key, _, value in pairs if key and not key.startswith("#")}


class EmbeddedSentinel(Lifetime):
    """A master and a replica (EmbeddedRedis, AOF fsynced always) watched by ``sentinels`` sentinels."""

    def __init__(
        self, *, master_name: str = "mymaster", sentinels: int = 3, binary: str | None = None
    ) -> None:
        if sentinels < 1:
            raise ValueError("a Sentinel set needs at least one sentinel")
        self.master_name = master_name
        self.n_sentinels = sentinels
        self.quorum = sentinels // 2 + 1
        self.binary = binary
        self.nodes: list[EmbeddedRedis] = []
        self.sentinels: list[EmbeddedRedis] = []
        self.root: Path | None = None
        self.startup_seconds: float | None = None

    # --- lifetime ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the master, the replica and the sentinels, and wait until all is in sync; idempotent."""
        if self.root is not None:
            return
        began = time.monotonic()
        binary = self.binary or find_redis_server()
        self.root = Path(tempfile.mkdtemp(prefix="engine-sentinel-"))
        self.nodes, self.sentinels = [], []
        self._register_atexit()
        try:
            master = self._start_data_node("master", binary, ())
            self._start_data_node("replica", binary, ("--replicaof", "127.0.0.1", str(master.port)))
            for index in range(self.n_sentinels):
                sentinel = self._spawn_sentinel(index, binary, master.port)
                self.sentinels.append(sentinel)
                try:
                    command(sentinel.port, "SENTINEL", "DEBUG", *SENTINEL_DEBUG)
                except (OSError, EmbeddedServerError) as exc:
                    self._fail(f"SENTINEL DEBUG failed on {sentinel.port}: {exc}", sentinel)
            self._wait_healthy(READY_TIMEOUT, "the Sentinel set was not ready")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def _start_data_node(self, name: str, binary: str, args: tuple[str, ...]) -> EmbeddedRedis:
        assert self.root is not None
        # No delay before a diskless full sync: the default waits 5 s for more replicas, on
        # start-up and on every rejoin.
        node = EmbeddedRedis(
            self.root / name,
            appendonly=True,
            binary=binary,
            extra_args=("--repl-diskless-sync-delay", "0", *args),
        )
        node.start()
        self.nodes.append(node)
        return node

    def _spawn_sentinel(self, index: int, binary: str, master_port: int) -> EmbeddedRedis:
        assert self.root is not None
        node_dir = self.root / f"sentinel-{index}"
        error: EmbeddedServerError | None = None
        for _ in range(PORT_ATTEMPTS):
            # A failed attempt's config file names its port; the sentinel may have rewritten it.
            shutil.rmtree(node_dir, ignore_errors=True)
            node_dir.mkdir(parents=True)
            sentinel = _SentinelProcess(node_dir, port=free_port(), binary=binary)
            sentinel.config_file.write_text(self._sentinel_conf(sentinel, master_port))
            try:
                sentinel.start()
            except EmbeddedServerError as exc:
                sentinel.stop()
                error = exc
                if ADDR_IN_USE not in str(exc):  # taken between free_port() and the bind
                    raise
                continue
            return sentinel
        assert error is not None
        raise error

    def _sentinel_conf(self, sentinel: _SentinelProcess, master_port: int) -> str:
        name = self.master_name
        return "\n".join([
            f"port {sentinel.port}",
            "bind 127.0.0.1",
            "protected-mode no",
            "daemonize no",
            f'dir "{sentinel.data_dir}"',
            f'logfile "{sentinel.log_file}"',
            "sentinel resolve-hostnames no",
            f"sentinel monitor {name} 127.0.0.1 {master_port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {name} 1",
            "",
        ])  # fmt: skip

    def stop(self) -> None:
        """Stop the sentinels, then the replica, then the master, and remove the temp dir; idempotent."""
        # Sentinels first, or they would fail over to whatever is left while the set goes
        # down; then replicas, since SHUTDOWN on a master waits for replicas catching up.
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in sorted(self.nodes, key=lambda node: self._role(node) == "master"):
            node.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self._unregister_atexit()

    # --- addresses -----------------------------------------------------------------------

    @property
    def sentinel_ports(self) -> list[int]:
        return [sentinel.port for sentinel in self.sentinels]

    @property
    def ports(self) -> list[int]:
        """The data nodes' ports (master and replica, in start order)."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:<s1>,.../<master name>/0``: a client asks the sentinels."""
        if not self.sentinels:
            raise EmbeddedServerError("the Sentinel set is not started")
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def node(self, port: int) -> EmbeddedRedis:
        """The data node (master or replica) listening on ``port``."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def master_port(self) -> int:
        """The master's port, as the first sentinel that answers says (GET-MASTER-ADDR-BY-NAME)."""
        for sentinel in self.sentinels:
            port = self._named_by(sentinel)
            if port is not None:
                return port
        raise EmbeddedServerError(f"no sentinel of {self.sentinel_ports} names a master {self.master_name!r}")

    def _named_by(self, sentinel: EmbeddedRedis) -> int | None:
        if not sentinel.running:
            return None
        try:
            reply = command(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        except (OSError, EmbeddedServerError):
            return None
        return int(str(reply[1])) if isinstance(reply, list) and len(reply) == 2 else None

    @staticmethod
    def _role(node: EmbeddedRedis) -> str | None:
        if not node.running:
            return None
        try:
            role = command(node.port, "ROLE")
        except (OSError, EmbeddedServerError):
            return None
        return str(role[0]) if isinstance(role, list) and role else None

    # --- failures ------------------------------------------------------------------------

    def kill_master(self) -> int:
        """SIGKILL the current master, as a crash would; its port (its data dir is kept)."""
        port = self.master_port()
        self.node(port).kill()
        return port

    def wait_for_failover(self, old_master_port: int, timeout: float = FAILOVER_TIMEOUT) -> int:
        """Wait until every running sentinel names the same master other than ``old_master_port``
        and that node answers ROLE as master; its port."""
        deadline = time.monotonic() + timeout
        while True:
            named = {self._named_by(sentinel) for sentinel in self.sentinels if sentinel.running}
            port = next(iter(named)) if len(named) == 1 else None
            # ROLE too: what the sentinels say is their view, and the test wants a node that
            # takes writes now.
            if (
                port not in (None, old_master_port)
                and port in self.ports
                and self._role(self.node(port)) == "master"
            ):
                return port
            if time.monotonic() >= deadline:
                message = f"no failover of {old_master_port} within {timeout:.1f}s: sentinels name {named}"
                self._fail(message, self.sentinels[0] if self.sentinels else None)
            time.sleep(POLL_INTERVAL)

    def restart_node(self, port: int, timeout: float = READY_TIMEOUT) -> None:
        """Start a killed data node again; the sentinels make it a replica of the current master
        (an old master comes back as a master first); wait until it is in sync."""
        self.node(port).start()
        self._wait_healthy(timeout, f"node {port} did not rejoin as a replica in sync")

    # --- waiting -------------------------------------------------------------------------

    def _health(self) -> tuple[str, EmbeddedRedis | None] | None:
        """None when the sentinels agree on a running master, know each other and see every
        running replica up, and those replicas are in sync with it; else why not and whom to blame."""
        named = {sentinel.port: self._named_by(sentinel) for sentinel in self.sentinels}
        master_port = next(iter(named.values()))
        if len(set(named.values())) != 1 or master_port is None:
            return f"the sentinels name masters {named}", self.sentinels[0]
        if master_port not in self.ports or self._role(self.node(master_port)) != "master":
            return f"the sentinels' master {master_port} is not a running master", None
        replicas = [node for node in self.nodes if node.running and node.port != master_port]
        at = self.node(master_port)
        try:
            info = _info(master_port, "replication")
            online = " ".join(v for k, v in info.items() if k.startswith("slave") and "state=online" in v)
            if info.get("connected_slaves") != str(len(replicas)):
                return f"master {master_port} has connected_slaves:{info.get('connected_slaves')}", at
            for at in replicas:
                link = _info(at.port, "replication")
                if (link.get("master_port"), link.get("master_link_status")) != (str(master_port), "up"):
                    return f"replica {at.port}: {link.get('role')} of {link.get('master_port')}", at
                if f"port={at.port}," not in online:
                    return f"master {master_port} does not list replica {at.port} online", at
            for at in self.sentinels:
                master = _fields(command(at.port, "SENTINEL", "MASTER", self.master_name))
                known = command(at.port, "SENTINEL", "REPLICAS", self.master_name)
                listed = [_fields(reply) for reply in known] if isinstance(known, list) else []
                # A sentinel that has not met the others yet could not win a failover election.
                seen = (master.get("flags"), master.get("num-other-sentinels"), len(listed))
                if seen != ("master", str(self.n_sentinels - 1), len(self.nodes) - 1):
                    return f"sentinel {at.port}: (flags, other sentinels, replicas) = {seen}", at
                views = {r.get("port"): (r.get("flags"), r.get("master-link-status")) for r in listed}
                if any(views.get(str(node.port)) != ("slave", "ok") for node in replicas):
                    return f"sentinel {at.port} sees the replicas as {views}", at
        except (OSError, EmbeddedServerError) as exc:
            return f"node {at.port} did not answer: {exc}", at
        return None

    def _wait_healthy(self, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            problem = self._health()
            if problem is None:
                return
            if time.monotonic() >= deadline:
                self._fail(f"{what} within {timeout:.1f}s: {problem[0]}", problem[1])
            time.sleep(POLL_INTERVAL)

    def _fail(self, message: str, node: EmbeddedRedis | None) -> NoReturn:
        node = node or (self.nodes[0] if self.nodes else None)
        if node is not None:
            message += f"\nlog tail ({node.log_file}):\n{log_tail(node.log_file)}"
        raise EmbeddedServerError(message)
