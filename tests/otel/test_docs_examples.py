"""The examples of docs/opentelemetry.md work as written: each runs in a fresh interpreter
(it sets the global tracer provider), pointed by the environment at the fake OpenAI server
and the local collector."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aicm.collector import LocalCollector
from tests.fakes import FakeOpenAI
from tests.providers.support import one_track

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "opentelemetry.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def run(code: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_examples_record_the_call_and_export_delivery_health(
    collector: LocalCollector, api_key: str, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    """Both examples in one interpreter (a start with openai and OpenTelemetry costs ~2 s)."""
    traces, metrics = examples()
    assert len(traces.strip().splitlines()) <= 15
    done = run(
        traces + "\n" + metrics,
        {
            "OPENAI_BASE_URL": openai_fake.base_url,
            "OPENAI_API_KEY": "test",
            "AICM_API_KEY": api_key,
            "AICM_API_BASE": collector.api_base,
        },
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    record = one_track(collector)
    assert record["service_key"] == "openai::gpt-4o-mini"
    assert record["payload"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    assert "aicm.delivery.engines" in done.stdout  # the console exporter's last export
    assert api_key not in done.stdout + done.stderr
