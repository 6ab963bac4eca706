"""Partitioned queues: one hot queue as K complete sub-queues spread over a cluster's masters.

``app.queue("events", partitions=K)`` makes ``events`` a name for K partitions, each a whole
queue of its own (stream, delayed set, dead letters, stats, job hashes, idempotency keys)
under its own hash tag, so every script still runs on one slot and the partitions can sit on
different masters. A partition's name is ``events#<i>.<s>``: ``#`` is refused in queue names,
so it can never collide with a user's queue, and ``s`` is the first integer that puts the
tag in the i-th K-th of the slot range. A cluster made with ``--cluster create`` owns even,
contiguous slot ranges, so the K partitions land evenly on its masters (and still spread
well after resharding). On a standalone server the names cost nothing.

Routing: a job with an idempotency key goes to the partition its key hashes to (so the
dedup check stays exact), else one with an explicit id (so "id taken" stays exact), else one
with a ``partition_key``; the rest go round robin, a whole batch at a time, so a bulk
enqueue stays one script call per chunk.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Iterable, Mapping

from engine.core.errors import ConfigurationError
from engine.core.keys import check_name

SLOTS = 16384
SEPARATOR = "#"
MAX_PARTITIONS = 256


def _crc16(data: bytes) -> int:
    # CRC16-CCITT (XMODEM), the cluster's key hash.
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str | bytes) -> int:
    """The cluster slot of ``key``, hash tags included: what ``CLUSTER KEYSLOT`` answers."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:  # "{}" is no tag: the whole key is hashed
            data = data[start + 1 : end]
    return _crc16(data) % SLOTS


def partition_names(queue: str, count: int) -> tuple[str, ...]:
    """The names of ``queue``'s ``count`` partitions, in partition order (deterministic)."""
    if count == 1:
        return (queue,)
    names = []
    for i in range(count):
        low, high = i * SLOTS // count, (i + 1) * SLOTS // count
        # The tags are 2-3 characters longer than the queue: a miss costs a CRC of ~10 bytes,
        # and about count tries find one, so even 256 partitions are named in milliseconds.
        name = next(n for s in itertools.count() if low <= key_slot(n := f"{queue}{SEPARATOR}{i}.{s}") < high)
        names.append(name)
    return tuple(names)


def base_queue(name: str) -> str:
    """The queue a partition belongs to (a plain queue's name is its own)."""
    return name.partition(SEPARATOR)[0]


def is_partition(name: str) -> bool:
    return SEPARATOR in name


def check_partitions(queue: str, value: object) -> int:
    if type(value) is not int or not 1 <= value <= MAX_PARTITIONS:
        raise ConfigurationError(
            f"queue {queue!r}: partitions must be an integer from 1 to {MAX_PARTITIONS}, not {value!r}"
        )
    return value


def check_queue_name(value: str) -> str:
    """A queue name as callers may give it: a queue, or one partition of one by its full name."""
    if isinstance(value, str) and value.count(SEPARATOR) == 1:
        base, _, rest = value.partition(SEPARATOR)
        index, dot, suffix = rest.partition(".")
        if dot and index.isdigit() and suffix.isdigit():
            check_name("queue", base)
            return value
    return check_name("queue", value)


def _stable_hash(value: str) -> int:
    # Python's hash() differs per process; every producer must pick the same partition.
    return zlib.crc32(value.encode("utf-8", "surrogatepass"))


class Layout:
    """Which queues are partitioned and into how many: declared by the app
    (``app.queue(...)``), or learnt from what Redis records (a producer without the code)."""

    def __init__(self) -> None:
        self.declared: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._names: dict[str, tuple[str, ...]] = {}
        self._turns: dict[str, itertools.count[int]] = {}

    def declare(self, queue: str, partitions: int) -> None:
        check_name("queue", queue)
        count = check_partitions(queue, partitions)
        known = self.declared.get(queue)
        if known is not None and known != count:
            raise ConfigurationError(
                f"queue {queue!r} is already declared with {known} partition(s), not {count}"
            )
        self.declared[queue] = count
        self._set(queue, count)

    def learn(self, recorded: Mapping[str, int]) -> None:
        """Counts Redis holds for queues this app did not declare."""
        for queue, count in recorded.items():
            if queue not in self.declared:
                self._set(queue, count)

    def _set(self, queue: str, count: int) -> None:
        self._counts[queue] = count
        self._names[queue] = partition_names(queue, count)

    def count(self, queue: str) -> int:
        return self._counts.get(base_queue(queue), 1)

    def partitions(self, queue: str) -> tuple[str, ...]:
        """The physical queues behind ``queue``: its partitions, or itself. A partition's
        own name stands for itself."""
        if is_partition(queue):
            return (queue,)
        return self._names.get(queue, (queue,))

    def expand(self, queues: Iterable[str]) -> list[str]:
        """Every physical queue behind ``queues``, each once, in order."""
        return list(dict.fromkeys(p for q in queues for p in self.partitions(q)))

    def group(self, physical: Iterable[str]) -> dict[str, list[str]]:
        """Physical queue names by the queue they belong to."""
        out: dict[str, list[str]] = {}
        for name in physical:
            out.setdefault(base_queue(name), []).append(name)
        return out

    def route(self, queue: str, key: str | None = None) -> str:
        """The partition a job goes to: the one ``key`` hashes to, else the next in turn."""
        names = self.partitions(queue)
        if len(names) == 1:
            return names[0]
        if key is not None:
            return names[_stable_hash(key) % len(names)]
        turn = self._turns.get(queue)
        if turn is None:
            # Start each process at a random partition, so producers that each send a few
            # batches do not all begin on the first one.
            turn = self._turns[queue] = itertools.count(int.from_bytes(os.urandom(2), "big"))
        return names[next(turn) % len(names)]
