"""Fixtures for the delivery engine tests: fast retry settings, a queue file, a hung server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short backoffs and auth pauses, so failure paths finish in a fraction of a second."""
    monkeypatch.setenv("AICM_BACKOFF_BASE", "0.02")
    monkeypatch.setenv("AICM_BACKOFF_CAP", "0.1")
    monkeypatch.setenv("AICM_AUTH_RETRY_INTERVAL", "0.2")
    monkeypatch.setenv("AICM_CLOSE_TIMEOUT", "5")


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A fresh persistent-queue file path."""
    return str(tmp_path / "queue" / "aicm.db")


@pytest.fixture
def hung_base() -> Iterator[str]:
    """An ``api_base`` whose server accepts connections and never answers (a hung service)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
