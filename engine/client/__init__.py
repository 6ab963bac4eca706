"""What users hold: the :class:`Engine` (``app.py``: settings, connections, enqueueing), its
tasks and bound calls (``tasks.py``), :class:`Job` handles (``handle.py``) and a queue's
dead letters (``dlq.py``). It sits above the broker, the history, the producer, cron and
the worker, which it composes; nothing below imports it (the parts below see the app
through :class:`engine.runtime.Runtime`).
"""
