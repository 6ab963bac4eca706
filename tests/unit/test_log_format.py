"""engine.log's formatter: a failed attempt's traceback is printed as the worker made it."""

from __future__ import annotations

import io
import json
import logging
import traceback

import pytest

from engine.core.errors import FORMATTED_TRACEBACK
from engine.log import formatter


def _render(exc: BaseException, as_json: bool) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(json=as_json))
    logger = logging.getLogger(f"tests.log_format.{as_json}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("job attempt failed; retrying", exc_info=exc)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def _raised() -> ValueError:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        return exc


def _exception(exc: BaseException, as_json: bool) -> str:
    """The traceback part of the rendered record."""
    rendered = _render(exc, as_json)
    text: str = json.loads(rendered)["exception"] if as_json else rendered.split("\n", 1)[1]
    return text


@pytest.mark.parametrize("as_json", [False, True], ids=["console", "json"])
def test_the_workers_traceback_text_is_printed_as_it_made_it(as_json: bool) -> None:
    exc = _raised()
    plain = _exception(exc, as_json)
    assert 'raise ValueError("boom")' in plain
    # The worker's text of the same traceback prints the same.
    setattr(exc, FORMATTED_TRACEBACK, "".join(traceback.format_exception(exc)))
    assert _exception(exc, as_json) == plain
    # And it is that text that is printed, not a traceback formatted again.
    setattr(exc, FORMATTED_TRACEBACK, "Traceback (made by the worker)\nValueError: boom\n")
    assert "Traceback (made by the worker)\nValueError: boom" in _exception(exc, as_json)
