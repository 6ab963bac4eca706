"""A throughput chart drawn on the server as plain SVG geometry (no JavaScript library)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WIDTH = 720
HEIGHT = 180
LEFT = 44
RIGHT = 40
TOP = 10
BOTTOM = 22


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 3, 4, 5, 6, 8 x 10^n that is >= value (at least 2, so the
    middle grid line stays a whole number)."""
    if value <= 2:
        return 2
    magnitude = 1
    while True:
        for step in (1, 2, 3, 4, 5, 6, 8):
            if step * magnitude >= value and (step * magnitude) % 2 == 0:
                return step * magnitude
        magnitude *= 10


def throughput_chart(series: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stacked bars (completed, failed) per minute and a failure-rate line (right axis, %)."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    n = max(1, len(series))
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.8)
    peak = _nice_ceiling(max((int(r["completed"]) + int(r["failed"]) for r in series), default=0))
    bars: list[dict[str, Any]] = []
    points: list[str] = []
    labels: list[dict[str, Any]] = []
    for i, row in enumerate(series):
        completed, failed = int(row["completed"]), int(row["failed"])
        x = LEFT + i * slot + (slot - bar_w) / 2
        h_ok = plot_h * completed / peak
        h_fail = plot_h * failed / peak
        base = TOP + plot_h
        when = row["minute"].strftime("%H:%M")
        bars.append(
            {
                "x": round(x, 2),
                "w": round(bar_w, 2),
                "ok_y": round(base - h_ok, 2),
                "ok_h": round(h_ok, 2),
                "fail_y": round(base - h_ok - h_fail, 2),
                "fail_h": round(h_fail, 2),
                "title": f"{when} UTC: {completed} completed, {failed} failed",
            }
        )
        rate = float(row["failure_rate"])
        points.append(f"{round(x + bar_w / 2, 2)},{round(base - plot_h * rate, 2)}")
        if i % 10 == 0 or i == len(series) - 1:
            labels.append({"x": round(x + bar_w / 2, 2), "text": when})
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": TOP + plot_h,
        "mid": TOP + plot_h / 2,
        "peak": peak,
        "half": peak // 2,
        "bars": bars,
        "rate_points": " ".join(points),
        "labels": labels,
        "label_y": HEIGHT - 6,
        "total_completed": sum(int(r["completed"]) for r in series),
        "total_failed": sum(int(r["failed"]) for r in series),
    }
