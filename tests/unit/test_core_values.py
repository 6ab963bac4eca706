"""Pure values of the core: job ids, backoff, times read back from a hash, masked URLs."""

from __future__ import annotations

import base64
import random
import time
from datetime import UTC, datetime

from engine import Backoff
from engine.core.model import JobInfo, Status, ms_to_datetime
from engine.core.urls import mask_url
from engine.producer import new_job_id, new_job_ids


def test_job_ids_are_base32hex_of_the_time_then_random_bits_and_sort_by_time() -> None:
    ids = []
    for _ in range(1000):
        ids.append(new_job_id())
        if len(ids) % 100 == 0:  # a batch's ids (enqueue_many) are made together
            ids += new_job_ids(10)
    ids += new_job_ids(1000)
    for job_id in ids[::37]:
        raw = base64.b32hexdecode(job_id + "======")  # 26 characters hold 16 bytes and 2 bits
        assert len(job_id) == 26 and base64.b32hexencode(raw)[:26].decode() == job_id
        assert abs(int.from_bytes(raw[:6], "big") - time.time() * 1000) < 60_000
    assert len(set(ids)) == len(ids)
    assert [i[:9] for i in ids] == sorted(i[:9] for i in ids)  # the time part never goes back


def test_backoff_is_a_pure_function_of_the_attempt() -> None:

    b = Backoff(initial=1.0, factor=2.0, max=600.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert b.delay(50) == 600.0 and b.delay(10_000) == 600.0  # capped, no overflow
    jittered = Backoff(initial=10.0, factor=2.0, max=600.0, jitter=0.2)
    rng = random.Random(7)
    values = [jittered.delay(2, rng) for _ in range(200)]
    assert all(16.0 <= v <= 24.0 for v in values) and len(set(values)) > 100


def test_times_out_of_range_read_back_as_unknown_not_as_a_crash() -> None:
    assert ms_to_datetime("1000") == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    for value in ("1e12", "99999999999999999999", "-99999999999999999", "x", "²"):
        assert ms_to_datetime(value) is None
    info = JobInfo.from_hash("j", "q", {"status": "waiting", "due": str(10**18), "attempts": "1"})
    assert info.scheduled_for is None and info.status == Status.WAITING


def test_passwords_are_masked_wherever_the_url_carries_them() -> None:
    assert mask_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    masked = mask_url("redis://h:6379/0?password=s3cret&socket_timeout=1")
    assert "s3cret" not in masked and "socket_timeout=1" in masked
