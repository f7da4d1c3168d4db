"""The sync CostManager across a fork: each tracked call is recorded once, by the process
that made it, after the manager found at the call's start was checked for a fork."""

from __future__ import annotations

import os
from typing import Any

import pytest

from aicm import CostManager
from aicm.collector import LocalCollector
from tests.tracking_support import OPENAI_HANDLING, service_config, usage_records


class _Completions:
    def create(self, *, model: str, messages: list[Any]) -> dict[str, Any]:
        return {
            "id": f"r-{messages[0]}",
            "model": model,
            "usage": {"prompt_tokens": 12, "completion_tokens": 5},
        }


class _Chat:
    completions = _Completions()


class _Client:
    chat = _Chat()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_records_its_own_calls_once(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """Calls made in a forked child are recorded by the child's own manager; the parent's
    queued records are sent by the parent alone."""
    manager = CostManager(
        _Client(),
        api_id="openai",
        configs=[service_config("openai", OPENAI_HANDLING)],
        **connection,
        delivery_type="mem_queue",
        batch_interval=60,
    )
    tracked = manager.client
    for i in range(3):
        tracked.chat.completions.create(model="gpt-4o", messages=[f"parent{i}"])
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            for i in range(2):
                tracked.chat.completions.create(model="gpt-4o", messages=[f"child{i}"])
            code = 0 if manager.close(5) == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(r["response_id"] for r in usage_records(collector)) == ["r-child0", "r-child1"]
    assert manager.close(5) == 0
    ids = sorted(r["response_id"] for r in usage_records(collector))
    assert ids == ["r-child0", "r-child1", "r-parent0", "r-parent1", "r-parent2"]
