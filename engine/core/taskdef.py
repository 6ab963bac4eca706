"""What a task is, apart from its code: its spec, the signature callers must match, what a
worker announces of it, and what the worker needs of a registered one (``TaskDef``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from engine.core.backoff import Backoff
from engine.core.priority import DEFAULT_PRIORITY
from engine.core.wiretypes import Description, Shape, parse


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a producer needs to know of a task (a worker additionally has the function)."""

    name: str
    queue: str
    timeout: float
    max_attempts: int
    backoff: Backoff
    signature: inspect.Signature | None = None
    shape: Shape | None = field(default=None, compare=False)
    """The parameters' and the result's types, to check and convert values by."""
    priority: int = DEFAULT_PRIORITY
    """Of the task's jobs unless an enqueue gives one (engine.core.priority)."""
    positional: tuple[int, int] | None = field(init=False, default=None, compare=False)
    """See :func:`_positional_range`; computed once (hashing a Signature costs per call)."""

    def __post_init__(self) -> None:
        if self.signature is not None:
            object.__setattr__(self, "positional", _positional_range(self.signature))


class TaskDef(Protocol):
    """A registered task as the worker and the scheduler use it (``engine.Task`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def fn(self) -> Callable[..., Any]: ...

    @property
    def spec(self) -> TaskSpec: ...

    @property
    def takes_ctx(self) -> bool: ...

    @property
    def is_async(self) -> bool: ...


def task_signature(fn: Callable[..., Any]) -> tuple[inspect.Signature, bool]:
    """The signature callers must match, and whether the function takes the context first.

    The first parameter is the context when it is named ``ctx``/``context`` or annotated
    with ``JobContext``; everything after it is the caller's.
    """
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    takes_ctx = False
    if params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        first = params[0]
        annotation = (
            first.annotation
            if isinstance(first.annotation, str)
            else getattr(first.annotation, "__name__", "")
        )
        takes_ctx = first.name in ("ctx", "context") or "JobContext" in str(annotation)
    if takes_ctx:
        sig = sig.replace(parameters=params[1:])
    return sig, takes_ctx


def _positional_range(signature: inspect.Signature) -> tuple[int, int] | None:
    """(min, max) positional arguments a call may pass with no keywords, when that alone
    decides whether it binds (no required keyword-only parameter); None otherwise."""
    low = high = 0
    for p in signature.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            high += 1
            if p.default is p.empty:
                low = high
        elif p.kind is p.VAR_POSITIONAL:
            high = 1 << 30
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            return None
    return low, high


class TaskAnnouncement(msgspec.Struct):
    """What a worker publishes of each task so producers without its code can enqueue it
    (and have their arguments checked against its signature)."""

    queue: str
    timeout: float
    max_attempts: int
    params: list[tuple[str, int, bool]] | None = None  # (name, inspect kind, has default)
    types: dict[str, Description] | None = None
    """Parameter name -> its type's description (``engine.core.wiretypes``), when typed."""
    priority: int = DEFAULT_PRIORITY

    @classmethod
    def of(cls, task: TaskDef) -> TaskAnnouncement:
        spec = task.spec
        params = None
        if spec.signature is not None:
            params = [
                (p.name, int(p.kind), p.default is not p.empty) for p in spec.signature.parameters.values()
            ]
        types = spec.shape.describe() if spec.shape is not None else None
        return cls(
            queue=spec.queue,
            timeout=spec.timeout,
            max_attempts=spec.max_attempts,
            params=params,
            types=types or None,
            priority=spec.priority,
        )

    def shape(self) -> Shape | None:
        """The parameters' types as announced (the ones this producer can check)."""
        signature = self.signature()
        if signature is None or not self.types:
            return None
        types = {name: t for name, d in self.types.items() if (t := parse(d)) is not Any}
        return Shape.from_types(signature, types) if types else None

    def signature(self) -> inspect.Signature | None:
        if self.params is None:
            return None
        kinds = {int(k): k for k in inspect._ParameterKind}  # the enum behind Parameter.kind
        return inspect.Signature(
            [
                inspect.Parameter(name, kinds[kind], default=None if has_default else inspect.Parameter.empty)
                for name, kind, has_default in self.params
            ]
        )
