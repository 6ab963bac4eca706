"""Lua scripts, one per state transition, loaded once and called by SHA.

Each ``.lua`` file opens with a header listing its KEYS, ARGV and return value. redis-py's
``Script`` objects run EVALSHA and fall back to loading the script on NOSCRIPT (after a
Redis restart or failover), in plain calls and in pipelines alike. ``bindings`` has one
typed function per script on a job's own path (named KEYS and ARGV, decoded replies),
``operations`` one per script of the rest, ``runner`` sends them.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

NAMES = tuple(
    sorted(
        f.name.removesuffix(".lua") for f in resources.files(__package__).iterdir() if f.name.endswith(".lua")
    )
)


@cache
def source(name: str) -> str:
    if name not in NAMES:
        raise KeyError(f"no script named {name!r}")
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
