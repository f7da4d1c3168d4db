"""The scenarios, in the order they run; each a module with ``NAME``, ``TITLE`` and ``run(ctx)``."""

from __future__ import annotations

SCENARIOS: dict[str, str] = {
    "caller_cost": "benchmarks.scenarios.caller_cost",
    "durable": "benchmarks.scenarios.durable",
    "end_to_end": "benchmarks.scenarios.end_to_end",
    "proxy": "benchmarks.scenarios.proxy",
    "memory": "benchmarks.scenarios.memory",
    "close": "benchmarks.scenarios.close",
    "imports": "benchmarks.scenarios.imports",
    "idle_cpu": "benchmarks.scenarios.idle_cpu",
    "web": "benchmarks.scenarios.web",
    "openai_sdk": "benchmarks.scenarios.openai_sdk",
}

# Left out of ``--quick`` (CI) unless named with ``--only``: each takes minutes of load.
NOT_QUICK: frozenset[str] = frozenset({"web", "openai_sdk"})


def default_names(quick: bool) -> list[str]:
    """The scenarios a run without ``--only`` runs."""
    return [name for name in SCENARIOS if not (quick and name in NOT_QUICK)]
