"""The chaos soak (benchmarks/chaos.py) as a test: slow, so not in the default run.

python -m pytest -m slow tests/integration/test_chaos.py
"""

from __future__ import annotations

import anyio
import pytest

from benchmarks.chaos import parser, soak


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_soak_loses_nothing() -> None:
    # Worker SIGKILLs, a Valkey SIGKILL (appendfsync always), a PostgreSQL outage, poison.
    args = parser().parse_args(["--jobs", "3000", "--workers", "3", "--rate", "100"])
    report = anyio.run(soak, args)
    print(report.table())
    assert report.ok, report.table()
    assert report.workers_killed >= 5 and report.valkey_kills == 1 and report.postgres_outage_s >= 5
