"""Decoding what arrives at the JSON API with the Structs of :mod:`engine.dashboard.schemas`:
bodies (:func:`from_body`), query strings (:func:`from_query`), single values
(:func:`checked`), and shaping what it answers (:func:`shaped`). A value that does not fit is
an :class:`Invalid` (422) whose message names the field, what it must be and what it was.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi
import structlog

from engine.dashboard.errors import Invalid

log = structlog.get_logger("engine.dashboard")
T = TypeVar("T")


def from_body(body: Any, kind: type[T]) -> T:
    """A JSON body (already parsed: see ``web.json_body``) as ``kind``; Invalid if it does not fit."""
    try:
        return msgspec.convert(body, type=kind)
    except msgspec.ValidationError as exc:
        raise Invalid(_message(exc, kind, body, "field {!r}", root="the body")) from None


_INTEGER = re.compile(r"[0-9]{1,30}", re.ASCII)
_NUMBER = re.compile(r"[0-9]{1,30}(\.[0-9]{1,30})?", re.ASCII)


def from_query(params: Mapping[str, str], kind: type[T]) -> T:
    """A query string as ``kind`` (empty values count as absent, unknown names are ignored;
    numbers in ASCII digits only: ``int()`` would take '٣')."""
    values: dict[str, Any] = {}
    for field in _struct(kind).fields:
        raw = params.get(field.encode_name)
        if raw in (None, ""):
            continue
        values[field.encode_name] = _number(field.type, raw)
    try:
        return msgspec.convert(values, type=kind)
    except msgspec.ValidationError as exc:
        raise Invalid(_message(exc, kind, values, "query parameter {!r}", root="the query")) from None


def checked(kind: Any, value: Any, name: str) -> Any:
    """One value as ``kind`` (a queue name, a job id...); Invalid naming ``name`` if not."""
    try:
        return msgspec.convert(value, type=kind)
    except msgspec.ValidationError as exc:
        raise Invalid(_message(exc, kind, value, name, root=name)) from None


def checked_number(kind: Any, raw: str, name: str) -> Any:
    """A number from a query string or form, as :func:`checked` does it."""
    return checked(kind, _number(_type_info(kind), raw), name)


def shaped(kind: type[T], value: Any) -> T | Any:
    """A response as ``kind`` for encoding. Should a handler ever build one that does not fit
    (the tests check that none does), it is sent as it is and the mismatch logged: a page of
    jobs is still better than a 500."""
    if isinstance(value, kind):
        return value
    try:
        return msgspec.convert(value, type=kind)
    except msgspec.ValidationError as exc:
        log.error("response does not fit its schema", schema=kind.__name__, error=str(exc))
        return value


def _number(info: mi.Type, raw: str) -> Any:
    base = base_type(info)
    if isinstance(base, mi.IntType) and _INTEGER.fullmatch(raw):
        return int(raw)
    if isinstance(base, mi.FloatType) and _NUMBER.fullmatch(raw):
        return float(raw)
    return raw


def _layers(info: mi.Type) -> Iterator[mi.Type]:
    """The type, then each one under its metadata and under ``| None``, outermost first."""
    while True:
        yield info
        if isinstance(info, mi.Metadata):
            info = info.type
        elif isinstance(info, mi.UnionType):
            rest = [t for t in info.types if not isinstance(t, mi.NoneType)]
            if len(rest) != 1:
                return
            info = rest[0]
        else:
            return


def base_type(info: mi.Type) -> mi.Type:
    """The type under its metadata, and under ``| None``."""
    *_, innermost = _layers(info)
    return innermost


@functools.cache
def _type_info(kind: Any) -> mi.Type:
    return mi.type_info(kind)


def _struct(kind: Any) -> mi.StructType:
    info = _type_info(kind)
    assert isinstance(info, mi.StructType), kind
    return info


def _meta(info: mi.Type) -> dict[str, Any]:
    """The title and description on a type (the outermost win), looking through ``| None``."""
    out: dict[str, Any] = {}
    for layer in _layers(info):
        if isinstance(layer, mi.Metadata):
            for key, value in {**(layer.extra or {}), **(layer.extra_json_schema or {})}.items():
                out.setdefault(key, value)
    return out


_MISSING: Any = object()
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _walk(kind: Any, value: Any, path: str) -> tuple[mi.Type, Any, str]:
    """The type and the value at a msgspec error path (``.ids[1]``), and the path as shown."""
    info: mi.Type = _type_info(kind)
    shown = ""
    for match in _STEP.finditer(path):
        key, index = match.groups()
        base = _container(info, want_list=key is None)
        if key is not None:
            shown += ("." if shown else "") + key
            field = (
                next((f for f in base.fields if f.encode_name == key), None)
                if isinstance(base, mi.StructType)
                else None
            )
            info = field.type if field is not None else mi.AnyType()
            value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
        else:
            shown += f"[{index}]"
            info = base.item_type if isinstance(base, mi.ListType) else mi.AnyType()
            position = int(index)
            value = value[position] if isinstance(value, list) and position < len(value) else _MISSING
    return info, value, shown


def _container(info: mi.Type, *, want_list: bool) -> mi.Type:
    """The list (or struct) type under metadata and unions, for the next step of a path."""
    while isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.UnionType):
        members = [_container(t, want_list=want_list) for t in info.types]
        wanted = (mi.ListType,) if want_list else (mi.StructType, mi.DictType)
        return next((t for t in members if isinstance(t, wanted)), mi.AnyType())
    return info


def _message(exc: msgspec.ValidationError, kind: Any, value: Any, where: str, *, root: str) -> str:
    match = _AT.match(str(exc))
    assert match is not None
    what, path = match["what"], match["path"] or ""
    info, found, shown = _walk(kind, value, path)

    def place(name: str) -> str:
        return where.format(name) if "{" in where else name

    missing = re.fullmatch(r"Object missing required field `(.+)`", what)
    if missing:
        name = missing[1]
        base = base_type(info)
        field = (
            next((f for f in base.fields if f.encode_name == name), None)
            if isinstance(base, mi.StructType)
            else None
        )
        hint = _meta(field.type).get("description") if field is not None else None
        full = f"{shown}.{name}" if shown else name
        return f"{place(full)} is required" + (f": {hint}" if hint else "")
    if what.startswith("Object contains unknown field"):
        base = base_type(info)
        allowed = sorted(f.encode_name for f in base.fields) if isinstance(base, mi.StructType) else []
        unknown = sorted(set(found) - set(allowed)) if isinstance(found, dict) else []
        listed = ", ".join(unknown)[:200]
        return f"unknown field(s) {listed}; allowed: {', '.join(allowed)}"
    meta = _meta(info)
    title, hint = meta.get("title"), meta.get("rule") or meta.get("description")
    at = f" ({place(shown)})" if shown and "{" in where else ""
    if what.startswith("Invalid enum value"):
        return f"unknown {title or 'value'} {_shown(found)}{at}: use one of {_describe(info, plain=True)}"
    if title and ", got `" not in what and found is not _MISSING:
        # The right kind of value, but not one of these: "invalid job id 'a b'".
        return f"invalid {title} {_shown(found)}{at}" + (f": {hint}" if hint else "")
    subject = place(shown) if shown else root
    expected = _describe(info)
    base = base_type(info)
    if not shown and isinstance(base, mi.StructType):
        expected += f" with the fields {', '.join(f.encode_name for f in base.fields)}"
    value_text = "" if found is _MISSING else f", not {_shown(found)}"
    return f"{subject} must be {expected}{value_text}"


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value[:80]) + ("…" if len(value) > 80 else "")
    if isinstance(value, list):
        return f"an array of {len(value)} item" + ("" if len(value) == 1 else "s")
    if isinstance(value, dict):
        return "an object"
    try:
        text = repr(value)
    except ValueError:  # an integer past str()'s digit limit
        return "a very large number"
    return text if len(text) <= 80 else text[:79] + "…"


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None and not low_open and not high_open:
        return f" from {_num(low)} to {_num(high)}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {_num(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {_num(high)}")
    return (" " + " and ".join(parts)) if parts else ""


def _length(low: int | None, high: int | None, unit: str) -> str:
    if low is not None and high is not None:
        return f" of {low} to {high} {unit}"
    if high is not None:
        return f" of at most {high} {unit}"
    if low is not None:
        return f" of at least {low} {unit}"
    return ""


def _describe(info: mi.Type, *, plain: bool = False) -> str:
    """What a value of this type is, in words ("an integer from 1 to 200")."""
    if isinstance(info, mi.Metadata):
        meta = info.extra_json_schema or {}
        inner = _describe(info.type, plain=plain)
        if plain:
            return inner
        if meta.get("title"):
            rule = (info.extra or {}).get("rule")
            return f"{inner} (a {meta['title']}" + (f": {rule})" if rule else ")")
        hint = meta.get("description")
        return f"{inner} ({hint})" if hint else inner
    if isinstance(info, mi.UnionType):
        rest = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return " or ".join(_describe(t, plain=plain) for t in rest) or "null"
    if isinstance(info, mi.LiteralType):
        return ", ".join(str(v) for v in info.values)
    if isinstance(info, mi.EnumType):
        return ", ".join(str(v.value) for v in info.cls)
    if isinstance(info, mi.StrType):
        return "a string" + _length(info.min_length, info.max_length, "characters")
    if isinstance(info, mi.BoolType):
        return "true or false"
    if isinstance(info, mi.IntType | mi.FloatType):
        low: float | None = info.ge if info.ge is not None else info.gt
        high: float | None = info.le if info.le is not None else info.lt
        noun = "an integer" if isinstance(info, mi.IntType) else "a number"
        return noun + _range(low, high, info.gt is not None, info.lt is not None)
    if isinstance(info, mi.ListType):
        item = _meta(info.item_type).get("title")
        return "a JSON array" + _length(info.min_length, info.max_length, f"{item}s" if item else "items")
    if isinstance(info, mi.DictType | mi.StructType):
        return "a JSON object"
    if isinstance(info, mi.DateTimeType):
        return "a date-time"
    if isinstance(info, mi.NoneType):
        return "null"
    return "a JSON value"
