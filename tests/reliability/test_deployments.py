"""Real deployment shapes, quick forms: each ends with an exact count at the collector."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicm.collector import LocalCollector
from reliability import shapes

pytestmark = pytest.mark.slow

needs_gunicorn = pytest.mark.skipif(
    not shapes.gunicorn_available(), reason="gunicorn is a dev tool: pip install gunicorn"
)


def exact(result: shapes.ShapeResult, expected: int) -> None:
    """``expected`` records stored, each once, none missing, none unexpected."""
    assert (result.stored, result.duplicates, result.missing, result.unexpected) == (
        expected,
        0,
        [],
        [],
    ), result.note
    assert result.expected == expected


@needs_gunicorn
@pytest.mark.parametrize("delivery", ["mem_queue", "persistent_queue"])
def test_gunicorn_preload_two_forked_workers(
    collector: LocalCollector, tmp_path: Path, delivery: str
) -> None:
    """gunicorn --preload, 2 forked workers, 60 requests + warm-up, SIGTERM: exactly 61 records."""
    result = shapes.gunicorn(collector, delivery, 60, tmp_path)
    exact(result, 61)
    assert result.note.startswith("2 worker(s) answered; gunicorn exit 0"), result.note


def test_prefork_pool_memory_queue(collector: LocalCollector, tmp_path: Path) -> None:
    """A fork pool whose parent tracked first (10 + 6 x 20 + 1): exactly 131 records."""
    exact(shapes.prefork(collector, "mem_queue", 10, 6, 20, tmp_path), 131)


def test_prefork_pool_memory_queue_closed_by_its_workers(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """With the guide's Finalize initializer, the fork pool's memory queue delivers all 131."""
    result = shapes.prefork(collector, "mem_queue", 10, 6, 20, tmp_path, finalize=True)
    exact(result, 131)


def test_prefork_pool_persistent_queue(collector: LocalCollector, tmp_path: Path) -> None:
    """The same pool on a persistent queue: exactly 131 records stored, each once."""
    result = shapes.prefork(collector, "persistent_queue", 10, 6, 20, tmp_path)
    # A worker's os._exit mid-request makes the parent resend that batch after its lease:
    # the service's dedup absorbs it (result.duplicates counts those resends).
    assert (result.stored, result.missing, result.unexpected) == (131, [], []), result.note
    assert result.ok
    assert result.note == "exit 0: workers 2 left 0"


@pytest.mark.parametrize(
    ("delivery", "per_thread"),
    [("immediate", 10), ("mem_queue", 250), ("persistent_queue", 60)],
)
def test_many_threads_one_tracker(
    collector: LocalCollector, tmp_path: Path, delivery: str, per_thread: int
) -> None:
    """24 threads released at once through one sync Tracker: exactly 24 x N records."""
    result = shapes.threads(collector, delivery, 24, per_thread, tmp_path)
    exact(result, 24 * per_thread)
    assert result.note == "left 0; errors []"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("delivery", ["mem_queue", "persistent_queue"])
def test_async_app(collector: LocalCollector, tmp_path: Path, backend: str, delivery: str) -> None:
    """40 tasks via AsyncTracker and Tracker.track_async on one loop: exactly 1,000 records."""
    result = shapes.async_app(collector, delivery, backend, 40, 25, tmp_path)
    exact(result, 1000)
    assert result.note == "left [0, 0]"


@pytest.mark.parametrize(
    ("kind", "delivery"),
    [
        ("tracker", "persistent_queue"),
        ("cost_manager", "mem_queue"),
        ("cost_manager", "persistent_queue"),
        ("rest", "mem_queue"),
    ],
)
def test_script_that_just_ends(
    collector: LocalCollector, tmp_path: Path, kind: str, delivery: str
) -> None:
    """A script tracks 40 records and ends without closing: the exit hook delivers all 40."""
    result = shapes.exit_script(collector, kind, delivery, 40, tmp_path)
    exact(result, 40)
    assert result.note == "exit 0: tracked"


@pytest.mark.parametrize("delivery", ["mem_queue", "persistent_queue"])
def test_forks_that_skip_pythons_hooks(
    collector: LocalCollector, tmp_path: Path, delivery: str
) -> None:
    """libc fork() twice (no Python fork hooks, as under uWSGI): 3 x 30 + 2 x 30 records,
    every generated id distinct, each stored once."""
    result = shapes.hookless_fork(collector, delivery, 2, 30, tmp_path)
    exact(result, 150)
    assert result.note.startswith("exit 0; 150 ids printed, 0 collided"), result.note


@pytest.mark.parametrize("how", ["db", "all"])
def test_queue_file_deleted_then_killed(
    collector: LocalCollector, tmp_path: Path, how: str
) -> None:
    """The queue file deleted mid-run, the process killed -9: a later process delivers all 40."""
    result = shapes.deleted_file(collector, how, 40, tmp_path)
    exact(result, 40)
