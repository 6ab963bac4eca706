"""Arguments and results converted by the task's annotations (msgspec ``convert``).

JSON knows strings, numbers, lists and objects; a task annotated ``when: datetime`` should
get a datetime, and a caller passing ``"x"`` for ``amount: int`` should be told at enqueue,
not find out in a worker an hour later. A :class:`Shape` holds the annotation of each
parameter (and of the result): producers check each value against it before anything is
stored (a value that does not fit is refused, naming the parameter and the type), and
workers convert the decoded JSON back into those types before the call.

A producer without the task's code checks against what the worker announced: each
parameter's type as a small JSON description (:func:`describe`, :func:`parse`) covering the
builtin scalars, datetimes, UUID, Decimal and containers of them. A class of the user's own
(a Struct, a dataclass, an enum) is announced as "any": only the worker, which has the class,
converts it.
"""

from __future__ import annotations

import datetime as dt
import inspect
import typing
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
from msgspec import inspect as mi

_SCALARS: dict[str, Any] = {
    "none": type(None),
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "bytes": bytes,
    "datetime": dt.datetime,
    "date": dt.date,
    "time": dt.time,
    "timedelta": dt.timedelta,
    "uuid": uuid.UUID,
    "decimal": Decimal,
}
_SCALAR_INFO: dict[type[mi.Type], str] = {
    mi.NoneType: "none",
    mi.BoolType: "bool",
    mi.IntType: "int",
    mi.FloatType: "float",
    mi.StrType: "str",
    mi.BytesType: "bytes",
    mi.DateTimeType: "datetime",
    mi.DateType: "date",
    mi.TimeType: "time",
    mi.TimeDeltaType: "timedelta",
    mi.UUIDType: "uuid",
    mi.DecimalType: "decimal",
}
Description = Any
"""A type as JSON: a scalar's name, "any", or {"list"|"set"|"frozenset"|"vartuple": d},
{"tuple": [d...]}, {"dict": [key, value]}, {"union": [d...]}, {"literal": [values]}."""


def describe(annotation: Any) -> Description:
    """The announceable description of a type ("any" for what only the worker can rebuild)."""
    try:
        return _describe(mi.type_info(annotation))
    except (TypeError, ValueError):
        return "any"


def _describe(info: mi.Type) -> Description:
    name = _SCALAR_INFO.get(type(info))
    if name is not None:
        return name
    if isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        kind = {
            mi.ListType: "list",
            mi.SetType: "set",
            mi.FrozenSetType: "frozenset",
            mi.VarTupleType: "vartuple",
        }
        return {kind[type(info)]: _describe(info.item_type)}
    if isinstance(info, mi.TupleType):
        return {"tuple": [_describe(t) for t in info.item_types]}
    if isinstance(info, mi.DictType):
        return {"dict": [_describe(info.key_type), _describe(info.value_type)]}
    if isinstance(info, mi.UnionType):
        return {"union": [_describe(t) for t in info.types]}
    if isinstance(info, mi.LiteralType):
        return {"literal": list(info.values)}
    return "any"


def parse(description: Description) -> Any:
    """The type a description names (Any for anything not understood: an announcement from a
    newer worker must not break an older producer)."""
    if isinstance(description, str):
        return _SCALARS.get(description, Any)
    if not isinstance(description, dict) or len(description) != 1:
        return Any
    ((kind, inner),) = description.items()
    try:
        if kind in ("list", "set", "frozenset"):
            container: Any = {"list": list, "set": set, "frozenset": frozenset}[kind]
            return container[parse(inner)]
        if kind == "vartuple":
            return tuple[parse(inner), ...]  # type: ignore[misc]
        if kind == "tuple" and isinstance(inner, list):
            return tuple[tuple(parse(d) for d in inner)] if inner else tuple[()]  # type: ignore[misc]
        if kind == "dict" and isinstance(inner, list) and len(inner) == 2:
            return dict[parse(inner[0]), parse(inner[1])]  # type: ignore[misc]
        if kind == "union" and isinstance(inner, list) and inner:
            return typing.Union[tuple(parse(d) for d in inner)]  # noqa: UP007
        if kind == "literal" and isinstance(inner, list) and inner:
            return typing.Literal[tuple(inner)]
    except TypeError:
        pass
    return Any


def _convertible(annotation: Any) -> bool:
    """Whether msgspec can check and rebuild values of this type from JSON (not Any, not a
    class it only knows as an opaque object)."""
    try:
        info = mi.type_info(annotation)
    except (TypeError, ValueError):
        return False
    return not isinstance(info, mi.AnyType | mi.CustomType)


@dataclass(frozen=True)
class Shape:
    """The types of a task's parameters (those worth converting) and of its result."""

    positional: tuple[tuple[str, Any], ...] = ()
    """Positional parameters in order: (name, type or None)."""
    var_positional: tuple[str, Any] | None = None
    by_name: Mapping[str, Any] = field(default_factory=dict)
    """Parameters a keyword can name -> type or None."""
    var_keyword: tuple[str, Any] | None = None
    returns: Any = None
    checked: bool = False
    """Whether any parameter has a type to check (else calls skip the work)."""

    @classmethod
    def of(cls, fn: Callable[..., Any], signature: inspect.Signature) -> Shape:
        """From a function's annotations (``signature``: its parameters, less the context)."""
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # a forward reference that does not resolve here: use what does
            hints = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)}
        returns = hints.get("return")
        types = {
            name: (hint if _convertible(hint := hints.get(name, Any)) else None)
            for name in signature.parameters
        }
        return cls.from_types(
            signature, types, returns if returns is not None and _convertible(returns) else None
        )

    @classmethod
    def from_types(cls, signature: inspect.Signature, types: Mapping[str, Any], returns: Any = None) -> Shape:
        positional: list[tuple[str, Any]] = []
        by_name: dict[str, Any] = {}
        var_positional = var_keyword = None
        for p in signature.parameters.values():
            t = types.get(p.name)
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                positional.append((p.name, t))
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                by_name[p.name] = t
            if p.kind is p.VAR_POSITIONAL:
                var_positional = (p.name, t)
            if p.kind is p.VAR_KEYWORD:
                var_keyword = (p.name, t)
        checked = any(t is not None for t in types.values())
        return cls(tuple(positional), var_positional, by_name, var_keyword, returns, checked)

    def describe(self) -> dict[str, Description]:
        """Each typed parameter's announceable description."""
        every = [*self.positional, *self.by_name.items(), self.var_positional, self.var_keyword]
        return {name: describe(t) for name, t in filter(None, every) if t is not None}

    def check(self, task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Refuse (TypeError naming the parameter and type) a value that does not fit."""
        if not self.checked:
            return
        positional = self.positional
        if not kwargs and len(args) <= len(positional):
            # The usual call, by position only (checked for every job enqueued): the walk
            # below without its generator.
            for i, value in enumerate(args):
                name, t = positional[i]
                if t is not None and not (type(value) is t and t in _AS_IS):
                    _converted(task, name, t, value)
            return
        for _place, name, t, value in self._typed(args, kwargs):
            if not (type(value) is t and t in _AS_IS):
                _converted(task, name, t, value)

    def convert(self, task: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The arguments rebuilt in their annotated types (TypeError when one does not fit)."""
        if not self.checked:
            return args, kwargs
        new_args = list(args)
        positional = self.positional
        if not kwargs and len(args) <= len(positional):
            # The usual call, by position only (what a worker converts for every job): the
            # same as the general walk below, without its generator.
            for i, value in enumerate(args):
                name, t = positional[i]
                if t is not None and not (type(value) is t and t in _AS_IS):
                    new_args[i] = _converted(task, name, t, value)
            return new_args, {}
        new_kwargs = dict(kwargs)
        for place, name, t, value in self._typed(args, kwargs):
            if type(value) is t and t in _AS_IS:
                continue
            converted = _converted(task, name, t, value)
            if isinstance(place, int):
                new_args[place] = converted
            else:
                new_kwargs[place] = converted
        return new_args, new_kwargs

    def result(self, value: Any) -> Any:
        """A decoded result in the task's return type (as it is when it does not fit)."""
        if self.returns is None:
            return value
        try:
            return msgspec.convert(value, self.returns)
        except msgspec.ValidationError:
            return value

    def _typed(
        self, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Iterator[tuple[int | str, str, Any, Any]]:
        """(position or keyword, parameter name, type, value) of each argument with a type."""
        positional = self.positional
        for i, value in enumerate(args):
            if i < len(positional):
                name, t = positional[i]
            elif self.var_positional is not None:
                name, t = self.var_positional
            else:
                return  # too many: the signature check says so
            if t is not None:
                yield i, name, t, value
        for key, value in kwargs.items():
            t = self.by_name.get(key)
            name = key
            if key not in self.by_name and self.var_keyword is not None:
                name, t = self.var_keyword
            if t is not None:
                yield key, name, t, value


_AS_IS = frozenset({int, float, str, bool})
"""Types msgspec gives a value of back as it is: such a value needs no convert call (a worker
converts every argument of every job, a producer checks each)."""


def _converted(task: str, name: str, t: Any, value: Any) -> Any:
    try:
        return msgspec.convert(value, t)
    except msgspec.ValidationError as exc:
        # msgspec says where inside a container the mismatch is ("... - at `$[1]`").
        where = f" ({exc})" if " - at `" in str(exc) else ""
        raise TypeError(
            f"task {task!r}: argument {name!r} must be {_type_name(t)}, not {_value(value)}{where}"
        ) from None


def _type_name(t: Any) -> str:
    return t.__name__ if isinstance(t, type) else str(t).replace("typing.", "")


def _value(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
