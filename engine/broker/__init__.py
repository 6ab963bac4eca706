"""Redis (or Valkey): the only package that imports redis.

``gateway`` (:class:`Gateway`, the facade the services hold: one client and the engine's
scripts for one namespace) composes the roles: ``connection`` (client factory,
ping, close), ``producing`` (enqueue, the coalescer), ``delivery`` (the worker's
transitions), ``admin`` (operations, locks, announcements), over ``base`` (what they share).
``scripts`` holds the ``.lua`` files, one per transition, ``scripts.bindings`` (a job's
own path) and ``scripts.operations`` (the rest) a typed function per script and
``scripts.runner`` what sends them; ``reads`` the read side's
queries, ``outbox`` the shipper's side, ``pool`` a connection pool that waits when every
connection is in use. Modules above catch the errors re-exported here and never import
redis. It imports only ``engine.core``.
"""

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

__all__ = ["Redis", "RedisError", "ResponseError"]
