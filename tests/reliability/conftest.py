"""Fixtures of the reliability tests: the repo root importable (``reliability``), fast retries."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short backoffs and a single IMMEDIATE attempt, so failure paths take milliseconds."""
    monkeypatch.setenv("AICM_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("AICM_BACKOFF_CAP", "0.05")
    monkeypatch.setenv("AICM_AUTH_RETRY_INTERVAL", "0.1")
    monkeypatch.setenv("AICM_MAX_ATTEMPTS", "1")
