"""Fixtures for the collector tests: the session's collector with sample configs; clients."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from aicm.collector import Faults, LocalCollector

from .helpers import API_KEY, CONFIGS, USER_AGENT


@pytest.fixture
def collector(session_collector: LocalCollector) -> LocalCollector:
    """The session's collector with no records, statistics or faults, and the sample configs."""
    session_collector.set_faults(Faults())
    session_collector.set_configs(CONFIGS)
    session_collector.clear()
    return session_collector


@pytest.fixture
async def client(collector: LocalCollector) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the collector's API root, sending the SDK's headers."""
    headers = {"Authorization": f"Bearer {API_KEY}", "User-Agent": USER_AGENT}
    async with httpx.AsyncClient(base_url=collector.url, headers=headers, timeout=5.0) as c:
        yield c


@pytest.fixture
async def admin(collector: LocalCollector) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the collector's admin endpoints (no API key)."""
    async with httpx.AsyncClient(base_url=collector.api_base, timeout=5.0) as c:
        yield c
