"""The public surface of ``aicm.collector``: a sorted, complete ``__all__``."""

from __future__ import annotations

import aicm.collector


def test_all_is_sorted_and_complete() -> None:
    """``__all__`` is sorted and names exactly the public objects the module exposes."""
    names = aicm.collector.__all__
    assert names == sorted(names)
    assert set(names) == {
        "Faults",
        "LocalCollector",
        "add_arguments",
        "create_app",
        "main",
        "run_from_args",
    }
    for name in names:
        assert getattr(aicm.collector, name).__module__.startswith("aicm.collector.")
