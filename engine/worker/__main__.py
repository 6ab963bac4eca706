"""``python -m engine.worker MODULE:APP``: run a worker (see ``engine.cli``)."""

from engine.cli import worker_main

raise SystemExit(worker_main())
