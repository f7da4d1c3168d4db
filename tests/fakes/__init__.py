"""Fake provider servers (OpenAI, Anthropic, a HeyGen-like REST API) on loopback, for tests."""

from __future__ import annotations

from ._serve import FAIL_MODEL, BackgroundServer, FakeService
from .anthropic_api import FakeAnthropic
from .heygen_api import DEFAULT_SESSIONS, FakeHeyGen
from .openai_api import FakeOpenAI

__all__ = [
    "DEFAULT_SESSIONS",
    "FAIL_MODEL",
    "BackgroundServer",
    "FakeAnthropic",
    "FakeHeyGen",
    "FakeOpenAI",
    "FakeService",
]
