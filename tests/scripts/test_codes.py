"""Every status code a script returns is a ScriptCode, and the error table is consistent."""

from __future__ import annotations

import re

import pytest

from engine.broker import scripts
from engine.core.errors import SCRIPT_ERRORS, FenceRejected, JobNotFound, ScriptCode, script_error

# A status return in a script: "return -5", "return 2  -- CANCEL_REQUESTED".
STATUS_RETURN = re.compile(r"\breturn (-?\d+)\b(?:\s*--\s*([A-Z_]+))?")


# The scripts whose numeric replies are status codes (the others return counts, flags, arrays).
STATUS_SCRIPTS = ("bury", "cancel", "delete", "enqueue", "lease", "replay")


@pytest.mark.parametrize("name", STATUS_SCRIPTS)
def test_each_scripts_status_returns_are_script_codes(name: str) -> None:
    returns = STATUS_RETURN.findall(scripts.source(name))
    assert returns
    for value, label in returns:
        code = ScriptCode(int(value))
        assert not label or code.name == label, f"{name}.lua returns {value} labelled {label}"


def test_the_negative_codes_are_told_in_the_headers() -> None:
    for code in ScriptCode:
        if code < 0:
            assert any(f"{code.value} {code.name}" in scripts.source(n) for n in scripts.NAMES), code


def test_codes_that_are_errors_make_their_exception() -> None:
    fenced = script_error(ScriptCode.FENCED)
    assert isinstance(fenced, FenceRejected) and fenced.reason is ScriptCode.FENCED
    missing = script_error(ScriptCode.NO_SUCH_JOB, "no job x")
    assert isinstance(missing, JobNotFound) and str(missing) == "no job x"
    assert script_error(ScriptCode.DONE) is None and script_error(ScriptCode.NOT_FAILED) is None
    assert all(code < 0 for code in SCRIPT_ERRORS)
