"""Shared by the CostManager and REST wrapper tests: handling configs and record helpers."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import anyio

from aicm.collector import LocalCollector

MESSAGES = [{"role": "user", "content": "Say hello"}]

# What the fakes answer (tests/fakes): OpenAI 12 prompt / 5 completion tokens, Anthropic 25 / 15.
OPENAI_TOKENS = (12, 5)
ANTHROPIC_TOKENS = (25, 15)

OPENAI_HANDLING: dict[str, Any] = {
    "tracked_methods": ["chat.completions.create"],
    "request_fields": ["model"],
    "response_fields": ["model"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "request_data.model",
        "timestamp": "timestamp",
        "response_id": "response_id",
        "model": "response_data.model",
        "input_tokens": "usage_data.prompt_tokens",
        "output_tokens": "usage_data.completion_tokens",
    },
}

ANTHROPIC_HANDLING: dict[str, Any] = {
    "tracked_methods": ["messages.create", "messages.stream"],
    "request_fields": ["model"],
    "response_fields": ["model"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "request_data.model",
        "timestamp": "timestamp",
        "response_id": "response_id",
        "model": "response_data.model",
        "input_tokens": "usage_data.input_tokens",
        "output_tokens": "usage_data.output_tokens",
    },
}

# Seed 000's handling config, as the seed writes it.
SEED_000_HANDLING: dict[str, Any] = {
    "tracked_methods": ["add"],
    "request_fields": ["a", "b"],
    "response_fields": [{"key": "value", "path": ""}],
    "payload_mapping": {
        "config": "config_identifier",
        "timestamp": "timestamp",
        "usage": "response_data.value",
    },
    "static_payload_fields": {"static": 1},
}

# Seed 004's handling config, as the seed writes it.
SEED_004_HANDLING: dict[str, Any] = {
    "tracked_methods": ["GET /v2/streaming.list"],
    "list_path": "sessions",
    "response_fields": [
        {"key": "session_id", "path": "session_id"},
        {"key": "duration", "path": "duration"},
    ],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "service_id",
        "timestamp": "timestamp",
        "response_id": "response_data.session_id",
        "usage": "response_data.duration",
    },
}


def service_config(
    api_id: str, handling: dict[str, Any] | None, config_id: str = ""
) -> dict[str, Any]:
    """One ``/configs`` entry (config_id defaults to ``<api_id>-config``)."""
    entry: dict[str, Any] = {"config_id": config_id or f"{api_id}-config", "api_id": api_id}
    if handling is not None:
        entry["handling_config"] = copy.deepcopy(handling)
    return entry


def usage_records(collector: LocalCollector) -> list[dict[str, Any]]:
    """The ``/track-usage`` records the collector stored, without its own bookkeeping."""
    return [
        {k: v for k, v in r.items() if k not in ("received_at", "user_agent")}
        for r in collector.records("track_usage")
    ]


def without_timestamps(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` minus their ``timestamp`` (checked to exist and be ISO-8601 UTC)."""
    out = []
    for record in records:
        assert record["timestamp"].endswith("Z"), record
        out.append({k: v for k, v in record.items() if k != "timestamp"})
    return out


def tokens(record: dict[str, Any]) -> tuple[Any, Any]:
    """(input_tokens, output_tokens) of a record."""
    return record.get("input_tokens"), record.get("output_tokens")


def host_of(url: str) -> str:
    """``127.0.0.1`` of a fake's URL: the api_id and config_id the REST wrappers use."""
    return urlsplit(url).hostname or ""


def netloc_of(url: str) -> str:
    """``127.0.0.1:PORT`` of a fake's URL: where the REST wrappers' service_id starts."""
    return urlsplit(url).netloc


def same_answer(a: Any, b: Any) -> bool:
    """Two SDK answers are equal but for their generated id and creation time."""
    skip = {"id", "created"}
    return bool(a.model_dump(exclude=skip) == b.model_dump(exclude=skip))


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` without blocking the event loop; False if it stayed false."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(0.01)
    return True


def wait_until_sync(predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` from a plain thread; False if it stayed false."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
