"""The engine's pure core: what a job, a task and a schedule are, and the vocabulary around them.

It imports only the standard library, msgspec and croniter (no redis, no asyncpg, no anyio),
so every other package may use it and it is tested without servers (``tests/unit``).
Modules: ``errors`` (the one exception tree, ``ScriptCode``), ``model`` (statuses, log
levels, the job envelope and read model), ``taskdef`` (task specs, signatures,
announcements), ``schedule`` (cron expressions, zones, ticks, misfire policies),
``transitions`` (what the scripts are given and reply: NewJob, Started, Outcome, Fence,
Retention), ``settings`` (the validated settings), ``urls`` (masked URLs, Redis URL checks),
``limits`` (the bounds on every job option), ``backoff`` (retry and reconnect timing),
``keys`` (every Redis key name), ``clock`` (the injectable time), ``signals`` (the test
signals).
"""
