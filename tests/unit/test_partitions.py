"""Partition names, routing and the checks of a partition count (pure: no server)."""

from __future__ import annotations

import pytest

from engine import ConfigurationError
from engine.core.partitions import (
    SLOTS,
    Layout,
    base_queue,
    check_queue_name,
    key_slot,
    partition_names,
)


def test_partition_names_fall_in_even_slot_ranges_and_never_change() -> None:
    for count in (2, 3, 6, 16, 256):
        names = partition_names("events", count)
        assert len(set(names)) == count
        for i, name in enumerate(names):
            assert i * SLOTS // count <= key_slot(name) < (i + 1) * SLOTS // count
            assert key_slot("{" + name + "}:stream") == key_slot(name)
            assert base_queue(name) == "events" and check_queue_name(name) == name
    assert partition_names("events", 6) == partition_names("events", 6)
    assert partition_names("events", 1) == ("events",)
    # The examples of the CLUSTER KEYSLOT documentation.
    assert (key_slot("foo"), key_slot("{user1000}.following")) == (12182, 3443)


def test_routing_by_key_is_stable_and_round_robin_visits_every_partition() -> None:
    layout = Layout()
    layout.declare("events", 4)
    names = layout.partitions("events")
    assert layout.route("events", "order-17") == layout.route("events", "order-17")
    other = Layout()
    other.declare("events", 4)
    assert other.route("events", "order-17") == layout.route("events", "order-17")  # across processes
    assert {layout.route("events", f"k{i}") for i in range(200)} == set(names)
    assert [layout.route("events") for _ in range(8)] in (
        [names[(start + i) % 4] for i in range(8)] for start in range(4)
    )
    assert layout.route("plain", "k") == "plain" and layout.partitions(names[2]) == (names[2],)
    assert layout.expand(["plain", "events", "events"]) == ["plain", *names]
    assert layout.group([*names, "plain"]) == {"events": list(names), "plain": ["plain"]}


def test_a_declared_count_wins_over_a_learnt_one_and_bad_counts_are_refused() -> None:
    layout = Layout()
    layout.declare("events", 3)
    layout.learn({"events": 5, "other": 2})
    assert (layout.count("events"), layout.count("other"), layout.count("plain")) == (3, 2, 1)
    with pytest.raises(ConfigurationError, match="already declared with 3"):
        layout.declare("events", 4)
    for bad in (0, -1, 257, "3", 2.0, True, None):
        with pytest.raises(ConfigurationError, match="partitions must be an integer from 1 to 256"):
            layout.declare("q", bad)  # type: ignore[arg-type]
    for bad in ("events#1", "events#x.1", "a#1.2#3", "#1.2", "bad name"):
        with pytest.raises(ConfigurationError, match="invalid queue name"):
            check_queue_name(bad)
