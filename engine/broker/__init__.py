"""Redis (or Valkey): the only package that imports redis.

``gateway`` (:class:`Gateway`: one connection pool and the engine's scripts for one
namespace, a method per state transition and the reads around them), ``pool`` (a connection
pool that waits when every connection is in use), ``scripts`` (the ``.lua`` files, one per
transition). Modules above catch the errors re-exported here and never import redis.
It imports only ``engine.core``.
"""

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

__all__ = ["Redis", "RedisError", "ResponseError"]
