"""Scenario 7: ``import aicm`` time, against ``import aicostmanager``, ``posthog``, ``segment``.

Each round starts a fresh interpreter per module (the order rotating) that times its one
import with ``perf_counter`` (bytecode caches warm: the warm-up round writes them). The floor
is ``import json``, a small stdlib module. One ``-X importtime`` run of ``import aicm`` lists
the heaviest imports underneath it.
"""

from __future__ import annotations

import subprocess
import sys

from .._common import REPO, Context, ScenarioResult, Target, child_env, have, rotate

NAME = "imports"
TITLE = "7. Import time (ms, fresh interpreter)"

MODULES: list[tuple[str, str, str]] = [
    ("aicm", "import aicm", "aicm"),
    ("aicostmanager", "import aicostmanager", "baseline"),
    ("posthog", "import posthog", "baseline"),
    ("segment.analytics", "import segment.analytics", "baseline"),
    ("json", "floor: import json", "floor"),
]
_PROGRAM = (
    "import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
)


def run(ctx: Context) -> ScenarioResult:
    """Fresh interpreters, rounds interleaved."""
    result = ScenarioResult(NAME, TITLE)
    env = child_env(ctx.tmp)
    subjects = []
    for module, label, role in MODULES:
        if module != "json" and module != "aicm" and not have(module):
            result.notes.append(f"{module} is not installed: skipped")
            continue
        subjects.append((module, result.measure(label, role, "import", "ms", "lower")))  # type: ignore[arg-type]

    def once(module: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", _PROGRAM.format(module=module)],
            env=env,
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return float(done.stdout.strip().splitlines()[-1])

    if not ctx.quick:
        for module, _ in subjects:  # warm-up: bytecode caches
            once(module)
    rounds = ctx.pick(ctx.rounds * 2, 2)
    for r in range(rounds):
        for module, measure in rotate(subjects, r):
            measure.add_value(once(module))
    measured = dict(subjects)
    if "posthog" in measured:
        mine, peer = measured["aicm"].median, measured["posthog"].median
        result.targets.append(
            Target(
                "import aicm / import posthog, medians",
                None if mine is None or not peer else mine / peer,
                "<=",
                1.0,
                "x",
            )
        )
    result.extra["heaviest_under_aicm"] = _heaviest(env)
    heavy = ", ".join(f"{name} {ms:.0f} ms" for name, ms in result.extra["heaviest_under_aicm"][:8])
    result.notes.append(f"heaviest packages under import aicm (-X importtime, cumulative): {heavy}")
    return result


def _heaviest(env: dict[str, str], top: int = 12) -> list[tuple[str, float]]:
    """Packages ``import aicm`` pulls in, by the cumulative time of their first import."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import aicm"],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    first: dict[str, float] = {}
    for line in done.stderr.splitlines():
        # "import time: self | cumulative | <indent>name"; a package's own first line
        # holds its cumulative time (everything it imported first included).
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative_text, name = line.split("|")
        name = name.strip()
        try:
            cumulative = int(cumulative_text.strip())
        except ValueError:
            continue
        if "." not in name and name != "aicm" and not name.startswith("_"):
            first[name] = max(first.get(name, 0.0), cumulative / 1000)
    return sorted(first.items(), key=lambda r: -r[1])[:top]
