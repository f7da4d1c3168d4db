"""The sync facades read the settings once when they are built: the INI file is opened once.

Each facade needs its settings before anything starts (the kill switch decides whether the
delivery worker runs at all); the async object it builds takes those very settings rather
than reading the environment and the file a second time, which could also disagree with
the first read if the file changed in between.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicm import CostManager, RestUsageWrapper, Tracker
from aicm.collector import LocalCollector

_opened: list[str] = []
_watching: list[str] = []
_hooked: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Audit hooks cannot be removed: this one only counts while a test watches a path.
    path = args[0] if event == "open" and _watching else None
    if isinstance(path, (str, os.PathLike)) and os.fspath(path) == _watching[0]:
        _opened.append(_watching[0])


class _Client:
    """A plain client to wrap (no configs track it)."""

    def ping(self) -> str:
        return "pong"


@pytest.fixture
def ini(tmp_path: Path, collector: LocalCollector) -> Iterator[Callable[[], int]]:
    """An INI file naming the collector; gives how many times it has been opened."""
    path = tmp_path / "aicm.ini"
    path.write_text(f"[aicm]\napi_base = {collector.api_base}\n", encoding="utf-8")
    if not _hooked:
        sys.addaudithook(_audit)  # once per process: audit hooks stay for its lifetime
        _hooked.append(True)
    _opened.clear()
    _watching[:] = [str(path)]
    try:
        yield lambda: len(_opened)
    finally:
        _watching.clear()


@pytest.mark.parametrize("disabled", [False, True])
@pytest.mark.parametrize(
    "build",
    [
        lambda ini, **kw: Tracker(aicm_ini_path=ini, delivery_type="mem_queue", **kw),
        lambda ini, **kw: Tracker(aicm_ini_path=ini, **kw),
        lambda ini, **kw: CostManager(_Client(), aicm_ini_path=ini, configs=[], **kw),
        lambda ini, **kw: RestUsageWrapper(
            httpx.Client(), base_url="http://127.0.0.1:9/", aicm_ini_path=ini, configs=[], **kw
        ),
    ],
    ids=["tracker-queued", "tracker-immediate", "cost-manager", "rest"],
)
def test_built_with_one_read(
    ini: Callable[[], int], tmp_path: Path, build: Callable[..., Any], disabled: bool
) -> None:
    """Building a facade, kill switch on or off, reads the INI file exactly once."""
    facade = build(str(tmp_path / "aicm.ini"), aicm_api_key="k", disabled=disabled or None)
    try:
        assert ini() == 1
        assert facade.disabled is disabled
    finally:
        facade.close()
    assert ini() == 1


@pytest.mark.anyio
@pytest.mark.parametrize("disabled", [False, True])
async def test_create_async_reads_once(
    ini: Callable[[], int], tmp_path: Path, disabled: bool
) -> None:
    """``Tracker.create_async`` resolves its settings once too, on asyncio and trio."""
    tracker = await Tracker.create_async(
        aicm_ini_path=str(tmp_path / "aicm.ini"), aicm_api_key="k", disabled=disabled or None
    )
    try:
        assert ini() == 1
        assert tracker.disabled is disabled
    finally:
        await tracker.aclose()
