"""Benchmarks of aicm against the service's own SDK, posthog, segment and raw floors.

Run ``python -m benchmarks`` (``--quick`` for CI); see ``docs/performance.md``. The
baseline packages are benchmark-only: they are never runtime dependencies of aicm.
"""
