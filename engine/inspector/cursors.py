"""The one cursor codec: opaque page cursors for every listing (live scans, history pages)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from engine.core.model import json_encoder


class InvalidCursor(ValueError):
    """A cursor that is not the next_cursor of a previous page of the same listing."""


def encode_cursor(kind: str, value: Any) -> str:
    """``value`` (anything JSON can hold) as a URL-safe cursor of the listing ``kind``."""
    raw = json_encoder.encode([kind, value])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: str) -> Any:
    """The value :func:`encode_cursor` was given (None for no cursor); InvalidCursor when it
    is not a cursor of ``kind``. A cursor is client input: its value still needs checking."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got, value = msgspec.json.decode(raw, type=tuple[str, Any])
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidCursor(
            f"invalid cursor {cursor[:60]!r}: pass the next_cursor of the previous page"
        ) from None
    if got != kind:
        raise InvalidCursor(f"invalid cursor {cursor[:60]!r}: it belongs to another listing")
    return value


def is_cursor(cursor: str | None, kind: str) -> bool:
    """True when ``cursor`` is a well-formed cursor of the listing ``kind``."""
    if not cursor:
        return False
    try:
        decode_cursor(cursor, kind)
    except InvalidCursor:
        return False
    return True
