"""docs/tracker.md: every Python example runs against the local collector, in page order."""

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from aicm import AsyncTracker, Tracker
from aicm.collector import LocalCollector
from tests.seeds.test_fastapi_lifespan import build_async_tracker_app, build_sync_tracker_app
from tests.seeds.tracker_seed_support import point_sdk_at, restored_aicm_logging

DOC = Path(__file__).resolve().parents[2] / "docs" / "tracker.md"
# Framework sketches that need packages aicm does not depend on.
NOT_RUN = ("django", "celery")


def python_blocks() -> list[str]:
    """The page's ```python blocks, in order."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


@pytest.fixture
def seed_env(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch, api_key: str
) -> LocalCollector:
    """The collector, with the environment pointing the SDK at it."""
    return point_sdk_at(collector, monkeypatch, api_key)


@pytest.mark.filterwarnings("ignore:\\s*on_event is deprecated:DeprecationWarning")
def test_every_example_runs(seed_env: LocalCollector, capsys: pytest.CaptureFixture[str]) -> None:
    """Each example (bar the Django/Celery sketches) runs, and the records reach the service."""
    blocks = [b for b in python_blocks() if not any(f"from {n}" in b for n in NOT_RUN)]
    assert len(blocks) >= 15
    namespace: dict[str, Any] = {}
    try:
        with restored_aicm_logging():
            for number, block in enumerate(blocks):
                exec(compile(block, f"docs/tracker.md block {number}", "exec"), namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, Tracker):
                value.close()
    assert not any(isinstance(v, AsyncTracker) and not v.closed for v in namespace.values())
    out = capsys.readouterr().out
    assert "{'tokens': \"expected Optional[int], got str 'oops'\"} [] []" in out
    assert "DeliveryHealth(worker_alive=True" in out
    assert "sending " in out  # the log file's debug lines
    assert seed_env.count("track") > 2500
    tracked_usage = [r["usage"] for r in seed_env.records("track_usage")]
    assert {"tokens": 256, "model": "gpt-4o-mini"} in tracked_usage
    assert {"duration": 12.3} in tracked_usage


@pytest.mark.parametrize("build", [build_async_tracker_app, build_sync_tracker_app])
def test_lifespan_examples_match_the_tested_apps(build: Any) -> None:
    """The page's lifespan examples say what the tested build_* functions do, line for line."""
    source = {line.strip() for line in inspect.getsource(build).splitlines()}
    marker = "AsyncTracker(" if build is build_async_tracker_app else "Tracker.create_async("
    (block,) = [b for b in python_blocks() if "lifespan=lifespan" in b and marker in b]
    code = [
        line.strip()
        for line in block.splitlines()
        if line.strip() and not line.startswith(("from ", "import "))
    ]
    assert [line for line in code if line not in source] == []
