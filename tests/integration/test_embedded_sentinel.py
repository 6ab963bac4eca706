"""Real-server tests for EmbeddedSentinel: a master, a replica, three sentinels, a real failover."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.sentinel import Sentinel

from engine.embedded import EmbeddedSentinel, EmbeddedServerError
from engine.embedded.nodes import command
from tests.conftest import ExternalSentinel


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def connectable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def replication(port: int) -> dict[str, str]:
    with redis.Redis(port=port, decode_responses=True) as direct:
        info: dict[str, str] = {k: str(v) for k, v in direct.info("replication").items()}
        return info


def client_sentinel(embedded: EmbeddedSentinel) -> Sentinel:
    """redis-py's own Sentinel client on the sentinels the URL names."""
    return Sentinel([("127.0.0.1", port) for port in embedded.sentinel_ports], socket_timeout=2)


@pytest.fixture(scope="module")
def embedded(sentinel: EmbeddedSentinel | ExternalSentinel) -> Iterator[EmbeddedSentinel]:
    """The session's set when it is ours; tests here kill nodes, so never an external one."""
    if isinstance(sentinel, EmbeddedSentinel):
        yield sentinel
        return
    with EmbeddedSentinel() as own:
        yield own


def test_the_set_comes_up_with_the_replica_in_sync(embedded: EmbeddedSentinel) -> None:
    assert embedded.startup_seconds is not None
    print(f"\nstart-up: {embedded.startup_seconds:.2f}s")
    assert embedded.master_name == "mymaster"
    assert len(embedded.nodes) == 2 and len(embedded.sentinel_ports) == 3
    assert len(set(embedded.ports + embedded.sentinel_ports)) == 5
    hosts = ",".join(f"127.0.0.1:{port}" for port in embedded.sentinel_ports)
    assert embedded.url == f"redis+sentinel://{hosts}/mymaster/0"

    master = embedded.master_port()
    (replica,) = (port for port in embedded.ports if port != master)
    assert embedded.node(master).port == master
    assert replication(master)["role"] == "master"
    assert replication(master)["connected_slaves"] == "1"
    link = replication(replica)
    assert (link["role"], link["master_port"], link["master_link_status"]) == ("slave", str(master), "up")
    for port in embedded.sentinel_ports:
        reply = command(port, "SENTINEL", "MASTER", "mymaster")
        assert isinstance(reply, list)
        fields = dict(zip(reply[::2], reply[1::2], strict=True))
        seen = (fields["port"], fields["num-other-sentinels"], fields["num-slaves"])
        assert seen == (str(master), "2", "1")
    assert client_sentinel(embedded).discover_master("mymaster") == ("127.0.0.1", master)
    with pytest.raises(KeyError):
        embedded.node(1)


def test_a_write_on_the_master_is_read_back_on_the_replica(embedded: EmbeddedSentinel) -> None:
    master = embedded.master_port()
    (replica,) = (port for port in embedded.ports if port != master)
    with redis.Redis(port=master) as direct:
        direct.set("greeting", "hello")
        assert direct.execute_command("WAIT", 1, 5000) == 1
    with redis.Redis(port=replica) as direct:
        assert direct.get("greeting") == b"hello"
        with pytest.raises(redis.ReadOnlyError):
            direct.set("greeting", "not here")
    with redis.Redis(port=master) as direct:
        direct.delete("greeting")


def test_sigkill_of_the_master_fails_over_and_the_old_master_rejoins(embedded: EmbeddedSentinel) -> None:
    old = embedded.master_port()
    (replica,) = (port for port in embedded.ports if port != old)
    with redis.Redis(port=old) as direct:
        direct.set("survivor", "kept")
        assert direct.execute_command("WAIT", 1, 5000) == 1  # on the replica before the kill
    pid = embedded.node(old).pid
    assert pid is not None

    began = time.monotonic()
    assert embedded.kill_master() == old
    assert not pid_alive(pid)
    new = embedded.wait_for_failover(old, timeout=20)
    failover = time.monotonic() - began
    assert new == replica != old
    assert embedded.master_port() == new
    with redis.Redis(port=new) as direct:
        assert direct.get("survivor") == b"kept"
        assert direct.set("after", "failover")
    # A client that asks the sentinels follows them to the new master.
    assert client_sentinel(embedded).discover_master("mymaster") == ("127.0.0.1", new)
    with client_sentinel(embedded).master_for("mymaster") as client:
        assert client.get("after") == b"failover"

    # The old master comes back as a master with its stale data; the sentinels demote it.
    began = time.monotonic()
    embedded.restart_node(old)
    rejoin = time.monotonic() - began
    print(f"\nfailover: {failover:.2f}s, rejoin as a replica: {rejoin:.2f}s")
    link = replication(old)
    assert (link["role"], link["master_port"], link["master_link_status"]) == ("slave", str(new), "up")
    assert replication(new)["connected_slaves"] == "1"
    with redis.Redis(port=old) as direct:
        assert direct.get("after") == b"failover"  # synced from the new master
    with redis.Redis(port=new) as direct:
        direct.delete("survivor", "after")


def test_stop_leaves_no_process_behind() -> None:
    with EmbeddedSentinel(master_name="small") as small:
        assert small.url.endswith("/small/0")
        assert small.master_port() in small.ports
        pids = [node.pid for node in small.nodes + small.sentinels]
        root = small.root
        ports = small.ports + small.sentinel_ports
        assert all(connectable(port) for port in ports)
    assert len(pids) == 5
    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert root is not None and not Path(root).exists()
    assert not any(connectable(port) for port in ports)
    small.stop()  # idempotent


def test_a_set_needs_a_sentinel_and_a_start() -> None:
    with pytest.raises(ValueError):
        EmbeddedSentinel(sentinels=0)
    with pytest.raises(EmbeddedServerError):
        _ = EmbeddedSentinel().url
