"""Records and settings the collector tests share."""

from __future__ import annotations

import itertools
from typing import Any

API_KEY = "test-key-123"
USER_AGENT = "aicm-sdk/0.1.0"
CONFIGS: list[dict[str, Any]] = [
    {
        "config_id": "cfg-openai",
        "api_id": "openai",
        "handling_config": {"tracked_methods": ["chat.completions.create"]},
        "manual_usage_schema": None,
    },
    {
        "config_id": "api.heygen.com",
        "api_id": "api.heygen.com",
        "handling_config": {"tracked_methods": ["GET /v2/streaming.list"]},
        "manual_usage_schema": {"duration": "float"},
    },
]

_ids = itertools.count()


def new_id() -> str:
    """A response_id no other test uses."""
    return f"resp-{next(_ids)}"


def track_record(**fields: Any) -> dict[str, Any]:
    """A valid /track record; keyword arguments override or add fields."""
    record: dict[str, Any] = {
        "api_id": "openai",
        "service_key": "openai::gpt-4o",
        "response_id": new_id(),
        "timestamp": "2024-01-01T00:00:00Z",
        "payload": {"input_tokens": 10, "output_tokens": 5},
    }
    record.update(fields)
    return record


def usage_record(**fields: Any) -> dict[str, Any]:
    """A valid /track-usage record, as the REST wrapper makes them."""
    record: dict[str, Any] = {
        "config_id": "api.heygen.com",
        "service_id": "api.heygen.com/v2/streaming.list",
        "timestamp": "2024-01-01T00:00:00Z",
        "response_id": new_id(),
        "usage": {"duration": 12},
    }
    record.update(fields)
    return record
