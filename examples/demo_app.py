"""The sample app ``python -m engine demo`` runs: a few kinds of jobs a web service offloads,
and a cron job that aggregates a month of orders.

Its code is ``engine/demo_app.py``: it ships inside the package so that the demo runs from a
plain ``pip install engine``, without this source tree. This module re-exports it, so either
name runs the same app::

    python -m engine.worker engine.demo_app:app --concurrency 50
    python -m engine.worker examples.demo_app:app --concurrency 50
"""

from __future__ import annotations

from engine.demo_app import (
    app,
    charge_card,
    checksum,
    make_thumbnail,
    monthly_report_preview,
    send_email,
)

__all__ = ["app", "charge_card", "checksum", "make_thumbnail", "monthly_report_preview", "send_email"]
