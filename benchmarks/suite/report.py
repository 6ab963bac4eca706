"""Writers: the markdown table, the JSON file and the PNG chart of a :class:`Run`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.suite.model import Result, Run
from benchmarks.suite.runner import fastest_peer, ratio

MiB = 1024 * 1024


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "ms":
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if unit == "bytes" and abs(value) >= 100_000:
        return f"{value / MiB:,.2f} MiB"
    return f"{value:,.0f}"


def cell(r: Result | None, unit: str) -> str:
    if r is None:
        return ""
    if r.skipped and not r.values:
        return "skip"
    if not r.values:
        return "error" if any(n.startswith("error") for n in r.notes) else "—"
    text = _fmt(r.median, unit)
    if len(r.values) > 1:
        text += f" ({_fmt(r.low, unit)} to {_fmt(r.high, unit)})"
    if r.capped:
        text += " †"
    return text


def targets(run: Run) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for the issue's targets, from this run's numbers."""
    out: list[tuple[str, str, str]] = []

    def vs_peer(key: str, label: str, need: float) -> None:
        rt = ratio(run, key)
        best = fastest_peer(run, key)
        if rt is None or best is None:
            out.append((label, "no comparison (engine or peers missing)", "n/a"))
            return
        measured = f"{rt:.1f}x the fastest peer ({best[0]})"
        out.append((label, measured, "met" if rt >= need else "NOT met"))

    vs_peer("drain_1", "drain, 1 worker process ≥ 5x the fastest peer", 5)
    vs_peer("enqueue_bulk", "bulk enqueue ≥ 5x the fastest peer's bulk API", 5)
    for key, label in (("latency_p50", "latency p50"), ("latency_p99", "latency p99")):
        rt = ratio(run, key)
        best = fastest_peer(run, key)
        engine = _engine(run, key)
        if rt is None or best is None or engine is None or engine.median is None:
            out.append((f"{label} below the best peer's", "no comparison", "n/a"))
            continue
        measured = f"{engine.median:.2f} ms vs {best[1].median:.2f} ms ({best[0]})"
        out.append((f"{label} below the best peer's", measured, "met" if rt > 1 else "NOT met"))
    on, off = _engine(run, "joblog_on"), _engine(run, "joblog_off")
    if on is not None and off is not None and on.median and off.median:
        share = on.median / off.median
        verdict = "met" if share >= 0.8 else "NOT met"
        out.append(("drain with the SQL job log on ≥ 80% of off", f"{share:.0%}", verdict))
    else:
        why = (on.skipped if on is not None and on.skipped else None) or "not measured"
        out.append(("drain with the SQL job log on ≥ 80% of off", why, "n/a"))
    on, off = _engine(run, "joblog_sustained_on"), _engine(run, "joblog_sustained_off")
    if on is not None and off is not None and on.median and off.median:
        # Not one of the targets: how far the burst figure above carries.
        out.append(
            (
                "(for reference) sustained drain, job log on vs off",
                f"{on.median / off.median:.0%} over {_jobs(run, 'joblog_sustained_on'):,} jobs",
                "reference",
            )
        )
    mem = run.extra.get("engine_memory")
    if mem:
        beyond = mem["beyond_payload"]
        out.append(
            (
                "< 300 bytes per waiting job beyond its payload",
                f"{mem['bytes_per_waiting_job']:.0f} B per job, payload {mem['payload_bytes_per_job']} B: "
                f"{beyond:.0f} B beyond",
                "met" if beyond < 300 else "NOT met",
            )
        )
        left = mem["bytes_left_after_full_drain"]
        out.append(
            (
                "back to baseline after a drain",
                f"{left / MiB:+.2f} MiB after draining {mem['jobs']:,} (results expired)",
                "met" if abs(left) < 0.5 * MiB else "NOT met",
            )
        )
    return out


def _jobs(run: Run, key: str) -> int:
    return next((sc.jobs for sc in run.scenarios if sc.key == key), 0)


def _engine(run: Run, key: str) -> Result | None:
    return next((r for r in run.results if r.scenario == key and r.system == "engine"), None)


def _ratio(rt: float | None) -> str:
    if rt is None:
        return ""
    return f"{rt:.1f}x" if rt >= 0.1 else f"{rt:.2g}x"


def markdown_table(run: Run) -> str:
    systems = [s for s in run.systems if not run.systems[s].get("skipped")]
    head = ["scenario", "unit", *systems, "fastest peer", "engine vs fastest"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc in run.scenarios:
        row_results = {r.system: r for r in run.results if r.scenario == sc.key}
        if not row_results:
            continue
        best = fastest_peer(run, sc.key)
        rt = ratio(run, sc.key)
        cells = [cell(row_results.get(s), sc.unit) for s in systems]
        if not any(c and c not in ("skip",) for c in cells):
            continue
        title = f"{sc.title} ({sc.jobs:,} jobs)"
        lines.append(
            "| "
            + " | ".join(
                [
                    title,
                    sc.unit,
                    *cells,
                    best[0] if best else "",
                    _ratio(rt),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def notes(run: Run) -> list[str]:
    out: list[str] = []
    for r in run.results:
        for n in dict.fromkeys(r.notes):
            out.append(f"- {r.system}, {run.scenario(r.scenario).title}: {n}")
        if r.skipped and not r.values and r.skipped != "no bulk enqueue API":
            out.append(f"- {r.system}, {run.scenario(r.scenario).title}: {r.skipped}")
    return out


def markdown(run: Run, *, title: str = "Benchmark results") -> str:
    m = run.machine
    parts = [
        f"# {title}",
        "",
        f"Command: `{run.command}` ({run.mode} mode"
        + (f", counts scaled by {run.scale:g}" if run.scale != 1 else "")
        + f"), started {run.started_at}, took {run.duration_s / 60:.1f} min.",
        "",
        f"Machine: {m.get('nproc')} cores ({m.get('cpu')}), {m.get('memory')} RAM, {m.get('os')}; "
        f"{m.get('python')}; server: {m.get('server')} (embedded, loopback, no persistence); "
        f"load average at start: {m.get('load_at_start')}.",
        "",
        "Each cell: median (min to max) over the repetitions "
        f"({run.extra.get('reps', '?')} unless a note says otherwise); † = hit the time cap, the "
        'rate so far is shown. "engine vs fastest" = how many times better the engine is than '
        "the fastest peer in that row (higher throughput, or lower latency/memory). "
        '"skip" = not applicable (e.g. no bulk API), see the notes.',
        "",
        markdown_table(run),
        "",
        "## Targets (ratios from this run)",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        *[f"| {t} | {v} | {ok} |" for t, v, ok in targets(run)],
        "",
        "## Systems and settings",
        "",
    ]
    for name, info in run.systems.items():
        if info.get("skipped"):
            parts.append(f"- **{name}**: skipped: {info['skipped']}")
            continue
        settings = "; ".join(f"{k}: {v}" for k, v in info.get("settings", {}).items())
        parts.append(f"- **{name}** {info.get('version', '')}: {settings}")
    extra = notes(run)
    if extra:
        parts += ["", "## Notes", "", *extra]
    for key, what in (("joblog_catch_up_s", "drain"), ("joblog_sustained_catch_up_s", "sustained drain")):
        lag = run.extra.get(key)
        if lag:
            parts += [
                "",
                f"Job log ({what}): PostgreSQL had every job's finished row "
                + ", ".join(f"{x:.2f} s" for x in lag)
                + " after the drain ended (per repetition).",
            ]
    prof = run.extra.get("profile")
    if prof:
        parts += ["", "## Profile of the engine's drain (pyinstrument, one worker process)", ""]
        if prof.get("error"):
            parts.append(f"Not available: {prof['error']}")
        else:
            parts.append(
                f"Files: `{prof['html']}`, `{prof['txt']}`. Own time by area "
                f"(share of the {prof.get('duration_s', 0):.2f} s profiled):"
            )
            parts.append("")
            for a in prof.get("by_area", [])[:10]:
                parts.append(f"- {a['area']}: {a['share']:.0%}")
            parts += ["", "Functions with the most own time:", ""]
            for f in prof.get("top_own_time", [])[:12]:
                parts.append(f"- `{f['function']}`: {f['share']:.1%}")
    return "\n".join(parts) + "\n"


def write_json(run: Run, path: Path) -> None:
    path.write_text(json.dumps(run.to_json(), indent=2, default=str))


def write_png(run: Run, path: Path) -> str | None:
    """A bar chart per scenario (log scale for throughput). Returns an error text, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib not installed ({exc})"
    systems = [s for s in run.systems if not run.systems[s].get("skipped")]
    keys = [sc for sc in run.scenarios if any(r.scenario == sc.key and r.values for r in run.results)]
    if not keys:
        return "nothing to plot"
    cols = 3
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    colors: dict[str, Any] = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(systems)}
    for ax, sc in zip(axes.flat, keys, strict=False):
        names, meds, lows, highs = [], [], [], []
        for s in systems:
            r = next((x for x in run.results if x.scenario == sc.key and x.system == s), None)
            if r is None or r.median is None:
                continue
            names.append(s + (" †" if r.capped else ""))
            meds.append(r.median)
            lows.append(r.median - (r.low or r.median))
            highs.append((r.high or r.median) - r.median)
        bars = ax.bar(
            range(len(names)),
            meds,
            yerr=[lows, highs],
            color=[colors[n.split(" ")[0]] for n in names],
            capsize=3,
        )
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{sc.title}", fontsize=9)
        ax.set_ylabel(sc.unit, fontsize=8)
        if len(meds) > 1 and min(meds) > 0 and max(meds) / min(meds) > 20:
            ax.set_yscale("log")
        for b, v in zip(bars, meds, strict=False):
            ax.annotate(_fmt(v, sc.unit), (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)  # fmt: skip
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(
        f"engine vs peers — {run.mode} mode, {run.machine.get('nproc')} cores, {run.machine.get('server')}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
