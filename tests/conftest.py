"""Shared fixtures: every async test runs on asyncio and trio; the local collector; a clean env."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aicm.collector import Faults, LocalCollector

API_KEY = "test-key-0123456789abcdef"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test once per backend."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's AICM_* variables, INI file or cache dir."""
    import os

    for name in list(os.environ):
        if name.startswith("AICM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


@pytest.fixture(scope="session")
def session_collector() -> Iterator[LocalCollector]:
    """One local collector for the session (a start costs ~0.1 s)."""
    with LocalCollector() as collector:
        yield collector


@pytest.fixture
def collector(session_collector: LocalCollector) -> LocalCollector:
    """The running local collector, emptied, with no faults and no configs."""
    session_collector.set_faults(Faults())
    session_collector.set_configs([])
    session_collector.clear()
    return session_collector


@pytest.fixture
def api_key() -> str:
    """The API key tests use (the collector accepts any key unless told otherwise)."""
    return API_KEY


@pytest.fixture
def connection(collector: LocalCollector) -> dict[str, str]:
    """Keyword arguments pointing an aicm tracker or client at the collector."""
    return {"aicm_api_key": API_KEY, "aicm_api_base": collector.api_base}
