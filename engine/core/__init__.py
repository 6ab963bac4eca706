"""The engine's pure core: what a job is, its statuses, bounds, backoff, key names and errors.

It imports only the standard library and msgspec (no redis, no asyncpg, no event loop), so
everything above may use it and it can be tested without servers. Modules: ``errors`` (the
one exception tree), ``model`` (statuses, the job envelope and read model), ``limits`` (the
bounds on every job option), ``backoff`` (retry timing), ``keys`` (every Redis key name).
"""
