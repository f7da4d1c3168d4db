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
}
