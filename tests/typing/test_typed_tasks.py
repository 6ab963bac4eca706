"""Users' code under ``mypy --strict``: every decorator form types enqueue's arguments and
job.result() from the task's function (tests/typing/user_code.py holds the cases)."""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

SAMPLE = Path(__file__).with_name("user_code.py")


def test_mypy_strict_checks_enqueue_arguments_and_result_types() -> None:
    expected_errors: set[tuple[int, str]] = set()
    expected_reveals: dict[int, str] = {}
    for number, line in enumerate(SAMPLE.read_text().splitlines(), start=1):
        if m := re.search(r"# E: ([a-z-]+)$", line):
            expected_errors.add((number, m[1]))
        if m := re.search(r"# R: (.+)$", line):
            expected_reveals[number] = m[1]
    stdout, stderr, _status = api.run(["--strict", "--no-incremental", "--show-error-codes", str(SAMPLE)])
    errors: set[tuple[int, str]] = set()
    reveals: dict[int, str] = {}
    for line in stdout.splitlines():
        if m := re.match(r".*user_code\.py:(\d+): error: .*\[([a-z-]+)\]$", line):
            errors.add((int(m[1]), m[2]))
        elif m := re.match(r'.*user_code\.py:(\d+): note: Revealed type is "(.+)"$', line):
            reveals[int(m[1])] = m[2]
    assert not stderr, stderr
    assert errors == expected_errors, stdout
    assert reveals == expected_reveals, stdout
