"""What every scenario shares: results, statistics, timing, and the helper processes.

A scenario measures aicm and its baselines in the same process run, interleaving their
rounds (the order rotates every round) so that a burst of load from elsewhere on the
machine hits every subject alike. Each subject yields one figure per round; a
:class:`Measure` keeps the per-round figures and reports their median, the median of the
per-round p99s, and the *spread* (max - min over median of the round figures) as the noise.
Ratios aicm/baseline are taken between measures of the same group and unit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
KEY = "bench-key"
USAGE: dict[str, int] = {"input_tokens": 812, "output_tokens": 96}
API_ID = "openai"
SERVICE_KEY = "gpt-4o-mini"

Role = Literal["aicm", "baseline", "floor"]
Better = Literal["lower", "higher"]


def have(module: str) -> bool:
    """True when ``module`` can be imported (a baseline package may be missing)."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# -- statistics ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[index])


def spread(values: Sequence[float]) -> float | None:
    """(max - min) / median of the round figures, in percent: the run's noise."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return None
    mid = statistics.median(finite)
    if mid == 0:
        return None
    return round((max(finite) - min(finite)) / abs(mid) * 100, 1)


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    magnitude = math.floor(math.log10(abs(value)))
    return round(value, max(0, digits - 1 - magnitude))


@dataclasses.dataclass
class Measure:
    """One subject of a scenario: its figure per round and what they sum up to."""

    subject: str
    role: Role
    group: str
    unit: str
    better: Better
    round_values: list[float] = dataclasses.field(default_factory=list)
    round_p99s: list[float] = dataclasses.field(default_factory=list)
    round_means: list[float] = dataclasses.field(default_factory=list)
    samples_per_round: int = 0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: str | None = None

    def add_samples(self, samples_ns: Sequence[int], *, overhead_ns: float = 0.0) -> None:
        """Add one round of per-call timings (nanoseconds) as microseconds per call."""
        values = sorted(max(0.0, (s - overhead_ns) / 1000.0) for s in samples_ns)
        self.samples_per_round = len(values)
        self.round_values.append(statistics.median(values))
        self.round_p99s.append(percentile(values, 0.99))
        self.round_means.append(statistics.fmean(values))

    def add_value(self, value: float, *, samples: int = 0) -> None:
        """Add one round's single figure (a rate, a size, a duration)."""
        self.round_values.append(value)
        if samples:
            self.samples_per_round = samples

    @property
    def median(self) -> float | None:
        """The median of the round figures (None when nothing was measured)."""
        finite = [v for v in self.round_values if math.isfinite(v)]
        return statistics.median(finite) if finite else None

    def to_dict(self) -> dict[str, Any]:
        """The measure as JSON data."""
        p99 = statistics.median(self.round_p99s) if self.round_p99s else None
        mean = statistics.median(self.round_means) if self.round_means else None
        return {
            "subject": self.subject,
            "role": self.role,
            "group": self.group,
            "unit": self.unit,
            "better": self.better,
            "median": _round(self.median),
            "p99": _round(p99),
            "mean": _round(mean),
            "spread_pct": spread(self.round_values),
            "rounds": len(self.round_values),
            "samples_per_round": self.samples_per_round,
            "round_values": [_round(v, 4) for v in self.round_values],
            "extra": self.extra,
            "skipped": self.skipped,
        }


@dataclasses.dataclass
class Target:
    """A figure aicm must reach: ``value <op> threshold``."""

    description: str
    value: float | None
    op: Literal["<=", ">="]
    threshold: float
    unit: str
    note: str = ""

    @property
    def met(self) -> bool | None:
        """True/False; None when the figure could not be measured."""
        if self.value is None or not math.isfinite(self.value):
            return None
        return self.value <= self.threshold if self.op == "<=" else self.value >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """The target as JSON data."""
        return {
            "description": self.description,
            "value": _round(self.value, 5),
            "op": self.op,
            "threshold": self.threshold,
            "unit": self.unit,
            "met": self.met,
            "note": self.note,
        }


@dataclasses.dataclass
class ScenarioResult:
    """What one scenario reports: measures, ratios aicm/baseline, targets, notes."""

    name: str
    title: str
    measures: list[Measure] = dataclasses.field(default_factory=list)
    targets: list[Target] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def measure(self, subject: str, role: Role, group: str, unit: str, better: Better) -> Measure:
        """Create and register a measure."""
        m = Measure(subject=subject, role=role, group=group, unit=unit, better=better)
        self.measures.append(m)
        return m

    def get(self, subject: str) -> Measure:
        """The measure of ``subject``."""
        for m in self.measures:
            if m.subject == subject:
                return m
        raise KeyError(subject)

    def ratios(self) -> list[dict[str, Any]]:
        """aicm / baseline for every pair of measures in the same group and unit."""
        out: list[dict[str, Any]] = []
        for a in self.measures:
            if a.role != "aicm" or a.median is None:
                continue
            for b in self.measures:
                if b.role == "aicm" or b.group != a.group or b.unit != a.unit:
                    continue
                if b.median is None or b.median == 0:
                    continue
                ratio = a.median / b.median
                out.append(
                    {
                        "group": a.group,
                        "aicm": a.subject,
                        "baseline": b.subject,
                        "role": b.role,
                        "unit": a.unit,
                        "ratio": _round(ratio),
                        "aicm_better": ratio < 1 if a.better == "lower" else ratio > 1,
                    }
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        """The scenario as JSON data."""
        return {
            "name": self.name,
            "title": self.title,
            "measures": [m.to_dict() for m in self.measures],
            "ratios": self.ratios(),
            "targets": [t.to_dict() for t in self.targets],
            "notes": self.notes,
            "extra": self.extra,
        }


# -- the run's context ------------------------------------------------------------------------


@dataclasses.dataclass
class Context:
    """What a scenario is given: the mode, the helper servers, a scratch directory."""

    quick: bool
    collector: str
    sink: str
    tmp: Path
    rounds: int

    def pick(self, full: int, quick: int) -> int:
        """``full`` in a full run, ``quick`` in quick mode."""
        return quick if self.quick else full

    def clear_collector(self) -> None:
        """Forget the collector's records (between phases: its store only grows)."""
        httpx.post(self.collector + "/_collector/clear", timeout=30)

    def collector_stored(self, kind: str = "track") -> int:
        """How many records of ``kind`` the collector has stored."""
        stats = httpx.get(self.collector + "/_collector/stats", timeout=30).json()
        return int(stats["records"][kind]["stored"])

    def scratch(self, name: str) -> Path:
        """A fresh directory under the run's scratch space."""
        path = self.tmp / f"{name}-{time.monotonic_ns()}"
        path.mkdir(parents=True)
        return path


def rotate(items: Sequence[Any], round_index: int) -> list[Any]:
    """``items`` rotated by ``round_index``: each subject takes every position in turn."""
    if not items:
        return []
    k = round_index % len(items)
    return [*items[k:], *items[:k]]


def run_timed_phases(
    ctx: Context,
    phases: Sequence[tuple[Measure, Callable[[], Sequence[int]], Callable[[], object]]],
    overhead_ns: float,
) -> None:
    """Run ``(measure, timed round, settle)`` phases: a warm-up round each (not in quick
    runs), then ``ctx.rounds`` rounds in rotating order, each round's per-call times
    added to its measure less the timer's overhead, and its settle step (a flush) after."""
    for _, round_fn, settle in phases if not ctx.quick else []:
        round_fn()
        settle()
    for r in range(ctx.rounds):
        for measure, round_fn, settle in rotate(phases, r):
            measure.add_samples(round_fn(), overhead_ns=overhead_ns)
            settle()


def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once (a server down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- timing ---------------------------------------------------------------------------------


def timer_overhead_ns(n: int = 20_000) -> float:
    """The median cost of one ``perf_counter_ns()`` pair: subtracted from per-call timings."""
    pc = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = pc()
        samples.append(pc() - t0)
    samples.sort()
    return float(samples[len(samples) // 2])


def time_calls(fn: Callable[[], object], n: int) -> list[int]:
    """Call ``fn()`` ``n`` times; the nanoseconds of each call."""
    pc = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = pc()
        fn()
        out[i] = pc() - t0
    return out


def time_calls_args(fn: Callable[..., object], args: tuple[Any, ...], n: int) -> list[int]:
    """Call ``fn(*args)`` ``n`` times; the nanoseconds of each call."""
    pc = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = pc()
        fn(*args)
        out[i] = pc() - t0
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# -- processes -------------------------------------------------------------------------------


def child_env(tmp: Path) -> dict[str, str]:
    """The environment of every benchmark process: no AICM_* settings, config dirs in ``tmp``.

    Both aicm and aicostmanager read ``AICM_*`` variables; the benchmarks configure each
    explicitly instead. Config and cache directories point into the scratch space so no
    SDK touches the user's own files.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AICM_", "POSTHOG_"))}
    env["XDG_CONFIG_HOME"] = str(tmp / "config")
    env["XDG_CACHE_HOME"] = str(tmp / "cache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("PYTHONDEVMODE", None)
    return env


def start_server(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server process that prints its ``http://127.0.0.1:PORT`` URL first."""
    process = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, text=True, env=env, cwd=str(REPO)
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if match is None:
        process.kill()
        raise RuntimeError(f"{' '.join(args)} did not start: {line!r}")
    return process, match.group(0)


@contextlib.contextmanager
def servers(tmp: Path) -> Iterator[tuple[str, str, int, int]]:
    """The collector and the sink, as subprocesses: yields (collector, sink, pids...)."""
    env = child_env(tmp)
    collector, collector_url = start_server(
        ["-m", "aicm.collector", "--port", "0", "--db", str(tmp / "collector.sqlite3")], env
    )
    try:
        sink, sink_url = start_server(["-m", "benchmarks._sink"], env)
        try:
            yield collector_url, sink_url, collector.pid, sink.pid
        finally:
            sink.terminate()
            sink.communicate(timeout=30)
    finally:
        collector.terminate()
        collector.communicate(timeout=30)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc/self/status."""
    values = {"VmRSS": math.nan, "VmHWM": math.nan}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: write 5 to clear_refs); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for dist in ("aicostmanager", "posthog", "segment-analytics-python", "httpx", "anyio"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "orjson": have("orjson"),
        "uvloop": have("uvloop"),
        "versions": versions,
    }


def aicm_tree_hash() -> str:
    """A short hash of aicm's source as it is now: tells whether the code moved during a run."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((REPO / "aicm").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_state() -> dict[str, Any]:
    """The commit measured, and whether aicm/ had uncommitted changes."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=str(REPO), capture_output=True, text=True, timeout=30
            )
        except OSError:
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "aicm_uncommitted_files": len(git("status", "--porcelain", "aicm").splitlines()),
    }


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
