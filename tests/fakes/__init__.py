"""Fake provider servers (OpenAI, Anthropic, Gemini, Bedrock, a HeyGen-like REST API) on
loopback, for tests."""

from __future__ import annotations

from ._serve import FAIL_MODEL, BackgroundServer, FakeService
from .anthropic_api import FakeAnthropic
from .bedrock_api import FakeBedrock
from .gemini_api import FakeGemini
from .heygen_api import DEFAULT_SESSIONS, FakeHeyGen
from .openai_api import FakeOpenAI

__all__ = [
    "DEFAULT_SESSIONS",
    "FAIL_MODEL",
    "BackgroundServer",
    "FakeAnthropic",
    "FakeBedrock",
    "FakeGemini",
    "FakeHeyGen",
    "FakeOpenAI",
    "FakeService",
]
