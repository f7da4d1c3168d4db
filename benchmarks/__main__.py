"""Benchmarks of aicm against its baselines, measured in the same run: ``python -m benchmarks``.

Each scenario runs in its own child process (so no scenario's threads or memory colour
another), against one local collector and one loopback sink, both subprocesses so they do
not share the GIL with what is measured. Every figure is a median over interleaved rounds
and comes with its ratio to the baselines of the same run; the table goes to stdout, the
whole run to JSON, and a plot of records/s to PNG.

    python -m benchmarks                 # full run: results/latest.json, docs/img/throughput.png
    python -m benchmarks --quick         # under a minute (CI): results/quick.json
    python -m benchmarks --only caller_cost,durable --json /tmp/run.json
    python -m benchmarks --render benchmarks/results/latest.json --markdown /tmp/tables.md
    python -m benchmarks --compare main  # main's figures against the working tree's, one table

Missed targets are reported, never an error: the exit status is 0 unless the run itself
could not start (say, the collector failed to come up).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import (
    REPO,
    RESULTS,
    aicm_tree_hash,
    child_env,
    git_state,
    machine,
    servers,
    write_json,
)
from ._report import markdown_report, plot, text_report
from ._subjects import baselines_missing
from .scenarios import SCENARIOS, default_names

PLOT = REPO / "docs" / "img" / "throughput.png"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds per scenario (CI)")
    parser.add_argument(
        "--only",
        default=None,
        metavar="NAME[,NAME]",
        help=f"run only these scenarios: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="where the JSON goes (default results/latest.json; quick: results/quick.json)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH",
        help="where the PNG goes (default docs/img/throughput.png; quick: results/quick.png)",
    )
    parser.add_argument(
        "--markdown", type=Path, default=None, metavar="PATH", help="also write Markdown tables"
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="run nothing: print the table (and --markdown, --plot) of an earlier run's JSON",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per subject (7; quick 3); with --compare, runs per side (3)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds one scenario may take before it is stopped (900; quick 50); with "
        "--compare, one side's whole run (1200; --full 7200)",
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="REV",
        help="run REV's benchmarks and the working tree's in interleaved rounds; one table",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="with --compare: full-size runs (default: --quick runs, minutes instead of hours)",
    )
    args = parser.parse_args(argv)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown:
            parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        args.names = names
    else:
        args.names = default_names(args.quick)
    return args


def _run_child(
    name: str,
    *,
    quick: bool,
    rounds: int,
    collector: str,
    sink: str,
    tmp: Path,
    timeout: float,
) -> dict[str, Any]:
    out = tmp / f"{name}.json"
    log = tmp / f"{name}.log"
    scratch = tmp / name
    scratch.mkdir()
    command = [
        sys.executable,
        "-m",
        "benchmarks._child",
        name,
        "--collector",
        collector,
        "--sink",
        sink,
        "--tmp",
        str(scratch),
        "--rounds",
        str(rounds),
        "--out",
        str(out),
    ]
    if quick:
        command.append("--quick")
    started = time.perf_counter()
    with log.open("w") as log_file:
        # Its own session: on a timeout the whole group goes (a scenario's own children too).
        child = subprocess.Popen(
            command,
            env=child_env(tmp),
            cwd=str(REPO),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            return {
                "name": name,
                "title": name,
                "error": f"stopped after {timeout:.0f} s",
                "seconds": round(time.perf_counter() - started, 2),
            }
    if not out.exists():
        tail = log.read_text(errors="replace")[-2000:]
        return {
            "name": name,
            "title": name,
            "error": f"the child wrote no result; its output ended with: {tail}",
            "seconds": round(time.perf_counter() - started, 2),
        }
    import json

    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _render(args: argparse.Namespace) -> int:
    import json

    report: dict[str, Any] = json.loads(args.render.read_text())
    print(text_report(report))
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_report(report))
        print(f"wrote {args.markdown}")
    if args.plot is not None:
        written = plot(report, args.plot)
        print(f"wrote {written}" if written else "no plot: matplotlib is not installed")
    return 0


def _compare_main(args: argparse.Namespace) -> int:
    from ._compare import run_compare

    quick = not args.full
    text, data = run_compare(
        args.compare,
        names=args.names if args.only else None,
        quick=quick,
        rounds=args.rounds or 3,
        timeout=args.timeout or (1200.0 if quick else 7200.0),
    )
    print(text)
    if args.json is not None:
        write_json(args.json, data)
        print(f"\nwrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios; print the table; write the JSON and the plot."""
    args = _parse(argv)
    if args.render is not None:
        return _render(args)
    if args.compare is not None:
        return _compare_main(args)
    quick: bool = args.quick
    rounds = args.rounds or (3 if quick else 7)
    timeout = args.timeout or (50.0 if quick else 900.0)
    json_path: Path = args.json or (RESULTS / ("quick.json" if quick else "latest.json"))
    plot_path: Path = args.plot or (RESULTS / "quick.png" if quick else PLOT)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "aicm",
        "quick": quick,
        "command": "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "git": {**git_state(), "aicm_tree_at_start": aicm_tree_hash()},
        "rounds": rounds,
        "baselines_missing": baselines_missing(),
        "scenarios": [],
        "targets": [],
    }
    with tempfile.TemporaryDirectory(prefix="aicm-benchmarks-") as tmp_name:
        tmp = Path(tmp_name)
        with servers(tmp) as (collector, sink, _, _):
            for name in args.names:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                try:
                    import httpx

                    httpx.post(collector + "/_collector/clear", timeout=60)
                except Exception as exc:
                    print(f"could not clear the collector: {exc}", file=sys.stderr)
                result = _run_child(
                    name,
                    quick=quick,
                    rounds=rounds,
                    collector=collector,
                    sink=sink,
                    tmp=tmp,
                    timeout=timeout,
                )
                report["scenarios"].append(result)
                for target in result.get("targets", []):
                    report["targets"].append({"scenario": result["title"], **target})
    report["seconds"] = round(time.perf_counter() - started, 1)
    trees = {s.get("aicm_tree") for s in report["scenarios"]} | {
        report["git"]["aicm_tree_at_start"]
    }
    report["git"]["aicm_changed_during_run"] = len(trees - {None}) > 1
    print(text_report(report))
    write_json(json_path, report)
    print(f"\nwrote {json_path}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_report(report))
        print(f"wrote {args.markdown}")
    written = plot(report, plot_path)
    if written:
        print(f"wrote {written}")
    else:
        print("no plot: matplotlib is not installed, or no throughput scenario ran")
    print(f"took {report['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
