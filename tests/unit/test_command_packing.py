"""Commands packed by hiredis (engine.broker.connection.hiredis_packing) are the bytes
redis-py's own packer makes, and what hiredis does not take is packed (or refused) by
redis-py as before."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from engine.broker.connection import hiredis_packing

CASES: list[tuple[Any, ...]] = [
    ("EVALSHA", "a" * 40, 2, "k1", "k2", 1764000000000, "", 0, b'{"args":[1]}', "\u00e9t\u00e9"),
    ("SET", "a", 1.1),
    ("SET", "a", 0.1 + 0.2),
    ("SET", "a", float("inf")),
    ("SET", "a", 10**30),
    ("SET", "a", -7),
    ("SET", "a", memoryview(b"xy")),
    ("SET", "a", bytearray(b"q")),  # hiredis refuses it: redis-py's packer takes it
    ("SET", "a", "\udcff"),  # not UTF-8: redis-py escapes it (encoding_errors)
    ("CONFIG GET", "maxmemory"),  # two words: redis-py splits them
    ("SET", "big", "x" * 100_000),
]


def _packed(connection: Any, args: tuple[Any, ...]) -> bytes:
    return b"".join(bytes(chunk) for chunk in connection.pack_command(*args))


@pytest.mark.parametrize("args", CASES, ids=lambda args: repr(args)[:40])
def test_hiredis_packs_what_redis_py_packs(args: tuple[Any, ...]) -> None:
    plain = Connection(encoding_errors="backslashreplace")
    fast = hiredis_packing(Connection)(encoding_errors="backslashreplace")
    assert _packed(fast, args) == _packed(plain, args)


def test_values_redis_py_refuses_are_still_refused() -> None:
    fast = hiredis_packing(Connection)()
    for value in (None, True):
        with pytest.raises(DataError):
            fast.pack_command("SET", "a", value)


def test_one_class_per_connection_class() -> None:
    assert hiredis_packing(Connection) is hiredis_packing(Connection)
    assert issubclass(hiredis_packing(Connection), Connection)
