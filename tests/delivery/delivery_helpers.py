"""Helpers the delivery tests share: ids, collector read-outs, polling without blocking."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio

from aicm.collector import LocalCollector

API = "openai"
SERVICE = "openai::gpt-4o"
USAGE = {"input_tokens": 10, "output_tokens": 5}


def new_ids(n: int, prefix: str = "r") -> list[str]:
    """``n`` response ids no other test uses."""
    tag = uuid.uuid4().hex[:8]
    return [f"{prefix}-{tag}-{i}" for i in range(n)]


def stored_ids(collector: LocalCollector, kind: str = "track") -> list[str]:
    """The response_ids the collector stored, in arrival order (duplicates stored once)."""
    return [r["response_id"] for r in collector.records(kind)]


def requests(collector: LocalCollector, endpoint: str = "track") -> dict[str, int]:
    """The collector's answers to ``endpoint`` so far, by status."""
    counts: dict[str, int] = collector.stats()["requests"][endpoint]
    return counts


def duplicates(collector: LocalCollector, kind: str = "track") -> int:
    """Records the collector received again after storing them once."""
    count: int = collector.stats()["records"][kind]["duplicates"]
    return count


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` without blocking the event loop; False if it stayed false."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(0.005)
    return True


def wait_until_sync(predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` from a plain thread; False if it stayed false."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True
