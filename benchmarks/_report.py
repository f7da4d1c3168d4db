"""Turn a run's JSON into the stdout table, the Markdown tables and the throughput plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

_ROLE = {"aicm": "aicm", "baseline": "base", "floor": "floor"}


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _target_value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _ratio_text(ratio: dict[str, Any]) -> str:
    verdict = "aicm better" if ratio["aicm_better"] else "aicm worse"
    return f"{ratio['ratio']:g}x {ratio['baseline']} ({verdict})"


def _rows(scenario: dict[str, Any]) -> list[list[str]]:
    rows = []
    for m in scenario.get("measures", []):
        if m.get("skipped"):
            rows.append([m["subject"], _ROLE[m["role"]], "skipped", "", "", "", m["unit"]])
            continue
        spread = m.get("spread_pct")
        rows.append(
            [
                m["subject"],
                _ROLE[m["role"]],
                _fmt(m.get("median")),
                _fmt(m.get("p99")),
                _fmt(m.get("mean")),
                "-" if spread is None else f"{spread:.0f}%",
                m["unit"],
            ]
        )
    return rows


HEADER = ["subject", "role", "median", "p99", "mean", "spread", "unit"]


def text_report(report: dict[str, Any]) -> str:
    """The whole run as plain-text tables (stdout)."""
    lines: list[str] = [header(report)]
    for scenario in report["scenarios"]:
        lines.append("")
        lines.append(f"== {scenario['title']}  [{scenario.get('seconds', '?')} s]")
        if "error" in scenario:
            lines.append(f"   FAILED: {scenario['error']}")
            continue
        rows = [HEADER, *_rows(scenario)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        for row in rows:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [row[i].rjust(widths[i]) for i in range(2, len(HEADER) - 1)]
            cells.append(row[-1])
            lines.append("  " + "  ".join(cells))
        by_subject: dict[str, list[str]] = {}
        for ratio in scenario.get("ratios", []):
            by_subject.setdefault(ratio["aicm"], []).append(_ratio_text(ratio))
        if by_subject:
            lines.append("  ratio aicm/baseline of the medians:")
            for subject, texts in by_subject.items():
                lines.append(f"    {subject}:")
                for text in texts:
                    lines.append(f"      {text}")
        for note in scenario.get("notes", []):
            lines.append(f"  note: {note}")
    git = report.get("git", {})
    if git.get("aicm_changed_during_run"):
        lines.append("")
        lines.append(
            "WARNING: aicm/ changed while this run went on: scenarios measured different code "
            "(see each scenario's aicm_tree in the JSON)"
        )
    lines.append("")
    lines.append("== targets")
    for target in report["targets"]:
        lines.append("  " + target_line(target))
    return "\n".join(lines)


def header(report: dict[str, Any]) -> str:
    """One line: the mode, the machine and the code measured."""
    m = report["machine"]
    git = report.get("git", {})
    return (
        f"aicm benchmarks ({'quick' if report['quick'] else 'full'}, {report['rounds']} rounds): "
        f"{m['nproc']} cores {m['cpu_model']}, Python {m['python']}, load average at start "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_average_at_start') or [])}; aicm commit "
        f"{git.get('commit')} + {git.get('aicm_uncommitted_files', '?')} uncommitted files "
        f"in aicm/ (tree {git.get('aicm_tree_at_start')})"
    )


def target_line(target: dict[str, Any]) -> str:
    """``[met] description: value unit (target op threshold)``."""
    met = target["met"]
    state = "met" if met else ("not measured" if met is None else "NOT MET")
    note = f"; {target['note']}" if target.get("note") else ""
    shown = _target_value(target["value"])
    return (
        f"[{state}] {target['scenario']}: {target['description']}: "
        f"{shown} {target['unit']} (target {target['op']} {target['threshold']:g}{note})"
    )


def by_mode_markdown(scenario: dict[str, Any], base: str) -> str:
    """A scenario whose subjects read ``<mode>: <figure>`` as one row per mode, in Markdown.

    Each cell is the median and, but in the ``base`` mode's row, its ratio to ``base``'s.
    """
    figures: list[str] = []
    units: dict[str, str] = {}
    cells: dict[str, dict[str, float | None]] = {}
    for m in scenario.get("measures", []):
        mode, _, figure = m["subject"].rpartition(": ")
        if figure not in units:
            figures.append(figure)
            units[figure] = m["unit"]
        cells.setdefault(mode, {})[figure] = m.get("median")
    header = ["mode", *(f if f == units[f] else f"{f} ({units[f]})" for f in figures)]
    out = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(figures)]
    reference = next((row for mode, row in cells.items() if mode.endswith(base)), {})
    for mode, row in cells.items():
        texts = []
        for figure in figures:
            value, ref = row.get(figure), reference.get(figure)
            text = _fmt(value)
            if row is not reference and value is not None and ref:
                text += f" ({value / ref:.2f}x)"
            texts.append(text)
        out.append("| " + " | ".join([mode, *texts]) + " |")
    return "\n".join(out) + "\n"


def markdown_report(report: dict[str, Any]) -> str:
    """The run's tables in Markdown (for docs/performance.md): one table per scenario."""
    out: list[str] = []
    for scenario in report["scenarios"]:
        if scenario.get("name") == "web" and "error" not in scenario:
            out.append(f"### {scenario['title']}: by mode, ratio to no tracking")
            out.append("")
            out.append(by_mode_markdown(scenario, "no tracking"))
    for scenario in report["scenarios"]:
        out.append(f"### {scenario['title']}")
        out.append("")
        if "error" in scenario:
            out.append(f"Failed: `{scenario['error']}`")
            out.append("")
            continue
        ratios: dict[str, list[str]] = {}
        for r in scenario.get("ratios", []):
            ratios.setdefault(r["aicm"], []).append(f"{r['ratio']:g}x {r['baseline']}")
        out.append("| " + " | ".join([*HEADER, "aicm / baseline (medians)"]) + " |")
        out.append("|" + "|".join(["---", "---"] + ["---:"] * 4 + ["---", "---"]) + "|")
        for row in _rows(scenario):
            out.append("| " + " | ".join([*row, "; ".join(ratios.get(row[0], []))]) + " |")
        out.append("")
        for note in scenario.get("notes", []):
            out.append(f"- {note}")
        if scenario.get("notes"):
            out.append("")
    out.append("### Targets")
    out.append("")
    out.append("| scenario | target | figure | met |")
    out.append("|---|---|---:|---|")
    for t in report["targets"]:
        met = t["met"]
        state = "met" if met else ("not measured" if met is None else "**not met**")
        note = f" ({t['note']})" if t.get("note") else ""
        shown = _target_value(t["value"])
        out.append(
            f"| {t['scenario']} | {t['description']} {t['op']} {t['threshold']:g} "
            f"{t['unit']}{note} | {shown} | {state} |"
        )
    out.append("")
    return "\n".join(out)


def _bars(scenario: dict[str, Any] | None, convert: Any) -> list[tuple[str, str, float, str]]:
    bars: list[tuple[str, str, float, str]] = []
    if scenario is None or "error" in scenario:
        return bars
    for m in scenario["measures"]:
        value = m.get("median")
        if value is None or m.get("skipped"):
            continue
        rate = convert(m, value)
        if rate is not None and rate > 0:
            bars.append((m["group"], m["subject"], rate, m["role"]))
    return bars


def plot(report: dict[str, Any], path: Path) -> Path | None:
    """Records/s per delivery type against the baselines, as a PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    scenarios = {s["name"]: s for s in report["scenarios"]}

    def from_cost(m: dict[str, Any], value: float) -> float | None:
        # The mean, not the median: a caller's throughput pays for every stall.
        mean = m.get("mean") or value
        return 1e6 / mean if m["unit"] == "us/call" and mean > 0 else None

    def from_rate(m: dict[str, Any], value: float) -> float | None:
        return value if m["unit"] == "records/s" else None

    panels = [
        (
            "caller side: records/s one caller can track (1e6 / mean us per call)",
            _bars(scenarios.get("caller_cost"), from_cost),
            [],
        ),
        (
            "durable enqueue: records/s on disk (targets: 1 caller 20k, 100 tasks 100k)",
            _bars(scenarios.get("durable"), from_rate),
            [20_000, 100_000],
        ),
        (
            "end to end: records/s delivered (aicm: stored by the collector; target 100k)",
            _bars(scenarios.get("end_to_end"), from_rate),
            [100_000],
        ),
    ]
    panels = [panel for panel in panels if panel[1]]
    if not panels:
        return None
    colours = {"aicm": "#1f77b4", "baseline": "#ff7f0e", "floor": "#9e9e9e"}
    heights = [max(2.0, 0.32 * len(bars) + 1.0) for _, bars, _ in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(11, sum(heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (title, bars, targets) in zip(axes[:, 0], panels, strict=True):
        bars = sorted(bars, key=lambda b: (b[0], b[3] != "aicm", -b[2]))
        labels = [f"[{group}] {subject}" for group, subject, _, _ in bars]
        values = [rate for _, _, rate, _ in bars]
        ax.barh(range(len(bars)), values, color=[colours[b[3]] for b in bars])
        ax.set_yticks(range(len(bars)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10, loc="left")
        for i, value in enumerate(values):
            ax.text(value, i, f" {value:,.0f}", va="center", fontsize=7)
        for target in targets:
            ax.axvline(target, color="#d62728", linestyle="--", linewidth=1)
        ax.set_xlim(min(values) / 2, max([*values, *targets]) * 4)
        ax.grid(axis="x", which="both", alpha=0.3)
    machine = report["machine"]
    fig.suptitle(
        f"aicm vs baselines, medians of one run ({'quick' if report['quick'] else 'full'});"
        f" {machine['nproc']} cores {machine['cpu_model']}, Python {machine['python']}."
        " Blue: aicm, orange: baseline SDK, grey: floor",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
