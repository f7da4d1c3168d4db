"""``python -m benchmarks --compare REV``: one table of REV's figures against the working tree's.

REV is checked out into a temporary git worktree (removed afterwards). Each round runs both
sides' own ``python -m benchmarks`` (the order alternating), each in a subprocess whose
``PYTHONPATH`` and working directory are that side's tree, so each side measures its own
``aicm`` with its own benchmark code. Figures are matched by scenario and subject name; a
side's figure is the median of its rounds. Figures only one side has are listed, not
compared; a figure worse by more than 10% on the working tree is flagged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._common import REPO, rotate
from ._report import _fmt

THRESHOLD = 0.10
Key = tuple[str, str]  # (scenario name, subject)


@dataclasses.dataclass
class Figure:
    """One named figure of one run: its unit, which way is better, and its value."""

    unit: str
    better: str
    value: float
    role: str = "aicm"


@dataclasses.dataclass
class Row:
    """One line of the comparison."""

    key: Key
    unit: str
    better: str
    rev: float
    work: float
    ratio: float | None
    role: str = "aicm"

    @property
    def worse(self) -> bool:
        """True when the working tree's figure is worse than REV's by more than 10%."""
        if self.ratio is None:
            return False
        if self.better == "higher":
            return self.ratio < 1 - THRESHOLD
        return self.ratio > 1 + THRESHOLD


def figures_of(report: dict[str, Any]) -> dict[Key, Figure]:
    """Every measured median of one run's JSON, by (scenario name, subject)."""
    out: dict[Key, Figure] = {}
    for scenario in report.get("scenarios", []):
        if "error" in scenario:
            continue
        for m in scenario.get("measures", []):
            value = m.get("median")
            if m.get("skipped") or value is None:
                continue
            out[scenario["name"], m["subject"]] = Figure(
                m["unit"], m["better"], float(value), m.get("role", "aicm")
            )
    return out


def combine(runs: Sequence[dict[Key, Figure]]) -> dict[Key, Figure]:
    """One figure per name: the median over the runs that measured it."""
    values: dict[Key, list[float]] = {}
    first: dict[Key, Figure] = {}
    for run in runs:
        for key, figure in run.items():
            values.setdefault(key, []).append(figure.value)
            first.setdefault(key, figure)
    return {
        key: dataclasses.replace(first[key], value=statistics.median(vs))
        for key, vs in values.items()
    }


def compare(
    rev: dict[Key, Figure], work: dict[Key, Figure]
) -> tuple[list[Row], list[Key], list[Key]]:
    """The rows both sides have (in the working tree's order), and the names only one has."""
    rows = []
    for key, w in work.items():
        r = rev.get(key)
        if r is None:
            continue
        ratio = w.value / r.value if r.value else None
        if ratio is not None and not math.isfinite(ratio):
            ratio = None
        rows.append(Row(key, w.unit, w.better, r.value, w.value, ratio, w.role))
    only_rev = [key for key in rev if key not in work]
    only_work = [key for key in work if key not in rev]
    return rows, only_rev, only_work


def render(
    rows: Sequence[Row], only_rev: Sequence[Key], only_work: Sequence[Key], rev_label: str
) -> str:
    """The comparison as a plain-text table, scenario by scenario."""
    header = ["subject", rev_label, "working tree", "work/rev", "unit", ""]
    lines: list[str] = []
    table: list[list[str]] = [header]
    scenario = None
    breaks: list[int] = []
    for row in rows:
        if row.key[0] != scenario:
            scenario = row.key[0]
            breaks.append(len(table))
            table.append([f"[{scenario}]", "", "", "", "", ""])
        table.append(
            [
                "  " + row.key[1],
                _fmt(row.rev),
                _fmt(row.work),
                "-" if row.ratio is None else f"{row.ratio:.2f}",
                f"{row.unit} ({row.better} is better)",
                "WORSE >10%" if row.worse else "",
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, cells in enumerate(table):
        if i in breaks:
            lines.append(cells[0])
            continue
        lines.append(
            "  ".join(
                [
                    cells[0].ljust(widths[0]),
                    *(cells[j].rjust(widths[j]) for j in (1, 2, 3)),
                    cells[4].ljust(widths[4]),
                    cells[5],
                ]
            ).rstrip()
        )
    lines.append("")
    lines.extend(summary(rows))
    for label, keys in (
        (f"only in {rev_label}", only_rev),
        ("only in the working tree", only_work),
    ):
        if keys:
            lines.append(f"{label} ({len(keys)}):")
            lines.extend(f"  {scenario}: {subject}" for scenario, subject in keys)
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> list[str]:
    """How many figures got worse, and how far the unchanged code moved (the run's noise).

    Baselines and floors run the same code on both sides: how far their figures moved
    between the sides is what the machine did, the yardstick for aicm's own ratios.
    """
    worse = [row for row in rows if row.worse]
    mine = [row for row in rows if row.role == "aicm"]
    lines = [
        f"{len(rows)} figures compared; {len(worse)} worse by more than {THRESHOLD:.0%} on "
        f"the working tree, {sum(r.worse for r in mine)} of them aicm's own "
        f"(of {len(mine)})"
    ]
    steady = sorted(
        r.ratio if r.better == "lower" else 1 / r.ratio
        for r in rows
        if r.role != "aicm" and r.ratio
    )
    if steady:
        lines.append(
            f"noise: the {len(steady)} baselines and floors (the same code on both sides) "
            f"moved {steady[0]:.2f}x to {steady[-1]:.2f}x, median "
            f"{statistics.median(steady):.2f}x (as cost ratios: above 1 is slower)"
        )
    return lines


# -- running both sides -------------------------------------------------------------------------


def _git(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(
        ["git", *args], cwd=str(cwd), capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def worktree(rev: str, parent: Path) -> Iterator[tuple[Path, str]]:
    """REV checked out (detached) in a temporary git worktree: yields (path, short commit)."""
    commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    path = parent / "rev"
    _git("worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield path, commit[:10]
    finally:
        with contextlib.suppress(RuntimeError):
            _git("worktree", "remove", "--force", str(path))
        shutil.rmtree(path, ignore_errors=True)


def side_env(tree: Path) -> dict[str, str]:
    """The environment of one side's run: its own tree first on the path, nothing else's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AICM_", "POSTHOG_"))}
    env["PYTHONPATH"] = str(tree)
    return env


def side_scenarios(tree: Path) -> list[str]:
    """The scenario names ``tree``'s benchmarks know."""
    program = (
        "import json; from benchmarks.scenarios import SCENARIOS; "
        "print(json.dumps(list(SCENARIOS)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=str(tree),
        env=side_env(tree),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    names: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return names


def _run_side(
    tree: Path, names: Sequence[str], *, quick: bool, out: Path, timeout: float
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--only",
        ",".join(names),
        "--json",
        str(out),
        "--plot",
        str(out.with_suffix(".png")),
    ]
    if quick:
        command.append("--quick")
    # A loaded machine can stretch a quick scenario past its own 50 s limit; this run as a
    # whole is bounded by ``timeout``.
    command += ["--timeout", str(timeout)]
    log = out.with_suffix(".log")
    with log.open("w") as log_file:
        done = subprocess.run(
            command,
            cwd=str(tree),
            env=side_env(tree),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(command)} in {tree} failed: {tail}")
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def run_compare(
    rev: str, *, names: Sequence[str] | None, quick: bool, rounds: int, timeout: float
) -> tuple[str, dict[str, Any]]:
    """Run both sides ``rounds`` times, interleaved; the table and the data behind it."""
    from .scenarios import default_names

    with tempfile.TemporaryDirectory(prefix="aicm-compare-") as tmp_name:
        tmp = Path(tmp_name)
        with worktree(rev, tmp) as (rev_tree, commit):
            rev_known = side_scenarios(rev_tree)
            wanted = list(names) if names else default_names(quick)
            common = [n for n in wanted if n in rev_known]
            skipped = [n for n in wanted if n not in rev_known]
            if not common:
                raise RuntimeError(f"{rev} has none of the scenarios {', '.join(wanted)}")
            label = rev if commit.startswith(rev) else f"{rev} ({commit})"
            sides = [("rev", rev_tree), ("work", REPO)]
            runs: dict[str, list[dict[Key, Figure]]] = {"rev": [], "work": []}
            for r in range(rounds):
                for side, tree in rotate(sides, r):
                    print(
                        f"round {r + 1}/{rounds}: {side} ({', '.join(common)}) ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    out = tmp / f"{side}-{r}.json"
                    report = _run_side(tree, common, quick=quick, out=out, timeout=timeout)
                    runs[side].append(figures_of(report))
                    for scenario in report.get("scenarios", []):
                        if "error" in scenario:
                            print(
                                f"  {side}: {scenario['name']} failed: {scenario['error']}",
                                file=sys.stderr,
                            )
    rows, only_rev, only_work = compare(combine(runs["rev"]), combine(runs["work"]))
    text = render(rows, only_rev, only_work, label)
    command = f"python -m benchmarks{' --quick' if quick else ''} --only {','.join(common)}"
    head = (
        f"{label} against the working tree: {rounds} interleaved rounds of `{command}` "
        f"per side; medians of the rounds; ratio = working tree / {label}"
    )
    if skipped:
        head += f"\nnot compared, {label} has no such scenario: {', '.join(skipped)}"
    data = {
        "rev": rev,
        "commit": commit,
        "quick": quick,
        "rounds": rounds,
        "scenarios": common,
        "not_in_rev": skipped,
        "rows": [dataclasses.asdict(row) | {"worse": row.worse} for row in rows],
        "only_rev": only_rev,
        "only_work": only_work,
    }
    return head + "\n\n" + text, data
