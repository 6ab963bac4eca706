"""Real-server tests for EmbeddedCluster: six valkey-server processes, a real failover."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from engine.embedded import EmbeddedCluster, key_slot, tags_on_distinct_masters
from engine.embedded.nodes import BUS_PORT_OFFSET, SLOTS, cluster_info, command, free_cluster_port
from tests.conftest import ExternalCluster


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


@pytest.fixture(scope="module")
def embedded(cluster: EmbeddedCluster | ExternalCluster) -> Iterator[EmbeddedCluster]:
    """The session's cluster when it is ours; tests here kill nodes, so never an external one."""
    if isinstance(cluster, EmbeddedCluster):
        yield cluster
        return
    with EmbeddedCluster() as own:
        yield own


def test_cluster_has_three_masters_owning_every_slot_and_three_replicas(embedded: EmbeddedCluster) -> None:
    assert len(embedded.nodes) == 6
    assert embedded.startup_seconds is not None
    assert len(set(embedded.ports)) == 6
    bus_ports = {port + BUS_PORT_OFFSET for port in embedded.ports}
    assert not bus_ports & set(embedded.ports)
    assert embedded.url == f"redis://127.0.0.1:{embedded.ports[0]}/0"
    assert embedded.urls == [f"redis://127.0.0.1:{port}/0" for port in embedded.ports]

    masters = embedded.masters()
    assert len(masters) == 3
    owners = embedded.slot_owners()
    assert sum(high - low + 1 for low, high, _ in owners) == SLOTS
    assert {port for _, _, port in owners} == set(masters)
    roles = {port: command(port, "ROLE") for port in embedded.ports}
    assert (
        sorted(str(role[0]) for role in roles.values() if isinstance(role, list))
        == ["master"] * 3 + ["slave"] * 3
    )
    for master in masters:
        (replica,) = embedded.replicas_of(master)
        role = roles[replica]
        assert isinstance(role, list) and role[2] == master and role[3] == "connected"
    for port in embedded.ports:
        info = cluster_info(port)
        assert info["cluster_state"] == "ok"
        assert command(port, "CONFIG", "GET", "appendonly") == ["appendonly", "yes"]  # the default
        assert info["cluster_known_nodes"] == "6"
        assert info["cluster_slots_assigned"] == str(SLOTS)


def test_key_written_through_a_cluster_client_reads_back(cluster_url: str) -> None:
    client = RedisCluster.from_url(cluster_url)
    try:
        for i in range(20):  # enough keys that every master gets some
            client.set(f"greeting:{i}", f"hello {i}")
        assert [client.get(f"greeting:{i}") for i in range(20)] == [f"hello {i}".encode() for i in range(20)]
        client.delete(*(f"greeting:{i}" for i in range(20)))
    finally:
        client.close()


def test_key_slot_matches_cluster_keyslot(embedded: EmbeddedCluster) -> None:
    keys = ["", "foo", "{q0}", "q0", "{q0}:stream", "a{b}c", "abc{}", "{}x", "x{}{y}", "{a{b}}", "\u00e9"]
    for key in keys:
        assert key_slot(key) == command(embedded.ports[0], "CLUSTER", "KEYSLOT", key), key
    assert key_slot("{q0}:stream") == key_slot("q0")


def test_tags_on_distinct_masters_spread_keys_over_every_master(embedded: EmbeddedCluster) -> None:
    names = tags_on_distinct_masters(embedded, 3)
    assert names == tags_on_distinct_masters(embedded, 3)  # deterministic
    owners = [embedded.master_of("{" + name + "}") for name in names]
    assert sorted(owners) == embedded.masters()
    client = RedisCluster.from_url(embedded.url)
    try:
        for name in names:
            client.set(f"{{{name}}}:probe", name)
    finally:
        client.close()
    for name, owner in zip(names, owners, strict=True):
        # A plain client on the owner sees the key: it really lives on that master.
        with redis.Redis(port=owner) as direct:
            assert direct.get(f"{{{name}}}:probe") == name.encode()
            direct.delete(f"{{{name}}}:probe")
    with pytest.raises(ValueError):
        tags_on_distinct_masters(embedded, 4)


def test_sigkill_of_a_master_promotes_its_replica_and_it_rejoins(embedded: EmbeddedCluster) -> None:
    (name,) = tags_on_distinct_masters(embedded, 1)
    key = f"{{{name}}}:survivor"
    old = embedded.master_of(key)
    (replica,) = embedded.replicas_of(old)
    with redis.Redis(port=old) as direct:
        direct.set(key, "kept")
        assert direct.execute_command("WAIT", 1, 5000) == 1  # on the replica before the kill
    index = embedded.ports.index(old)
    victim = embedded.nodes[index]
    pid = victim.pid
    assert pid is not None
    victim.kill()
    assert not pid_alive(pid)

    assert embedded.wait_for_failover(old, timeout=20) == replica
    assert old not in embedded.masters()
    assert len(embedded.masters()) == 3
    assert embedded.master_of(key) == replica
    # Any running node will do as the entry point: the killed one may be the first, the url's.
    client = RedisCluster.from_url(embedded.node(replica).url)
    try:
        assert client.get(key) == b"kept"
    finally:
        client.close()

    # The old master comes back as the new master's replica: the cluster is whole again.
    embedded.restart_node(index)
    assert embedded.replicas_of(replica) == [old]
    assert len(embedded.masters()) == 3
    with redis.Redis(port=replica) as direct:
        direct.delete(key)


def test_stop_leaves_no_process_behind() -> None:
    # Masters only, in memory only (what the cluster benchmark runs).
    with EmbeddedCluster(masters=3, replicas=0, appendonly=False) as small:
        assert len(small.nodes) == 3
        assert len(small.masters()) == 3
        assert all(cluster_info(port)["cluster_state"] == "ok" for port in small.ports)
        for port in small.ports:
            assert command(port, "CONFIG", "GET", "appendonly") == ["appendonly", "no"]
        pids = [node.pid for node in small.nodes]
        root = small.root
        ports = small.ports
    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert root is not None and not Path(root).exists()
    assert not any(connectable(port) for port in ports)
    small.stop()  # idempotent


def test_free_cluster_port_has_a_free_bus_port() -> None:
    port = free_cluster_port()
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", port))
        b.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
    assert free_cluster_port(exclude=[port]) != port


def test_a_cluster_needs_three_masters() -> None:
    with pytest.raises(ValueError):
        EmbeddedCluster(masters=2)
