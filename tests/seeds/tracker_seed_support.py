"""Shared by the Tracker seed tests (001, 002, 003, FastAPI lifespan): configs and record checks."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from aicm.collector import LocalCollector

#: Makes every seed example valid: seed 001 tracks {"duration": 12.3} alone, seed 003
#: {"tokens": 5} alone, and {"tokens": "oops"} must still fail.
SEED_SCHEMA = {"tokens": "Optional[int]", "model": "Optional[str]", "duration": "Optional[float]"}
SEED_CONFIGS = [
    {"config_id": "cfg", "api_id": "manual", "manual_usage_schema": SEED_SCHEMA},
    {"config_id": "your-config-id", "api_id": "manual", "manual_usage_schema": SEED_SCHEMA},
]
_BOOKKEEPING = {"received_at", "user_agent"}


def point_sdk_at(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch, api_key: str
) -> LocalCollector:
    """Set AICM_API_KEY/AICM_API_BASE to the collector, which serves the seed configs."""
    monkeypatch.setenv("AICM_API_KEY", api_key)
    monkeypatch.setenv("AICM_API_BASE", collector.api_base)
    collector.set_configs(SEED_CONFIGS)
    return collector


def _check_common(
    record: dict[str, Any],
    *,
    response_id: str | None,
    timestamp: str | None,
    client_customer_key: str | None,
    context: dict[str, Any] | None,
) -> None:
    assert record["user_agent"].startswith("aicm-sdk/")
    if response_id is None:
        assert uuid.UUID(record["response_id"]).version == 4
    else:
        assert record["response_id"] == response_id
    if timestamp is None:
        when = dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 60
    else:
        assert record["timestamp"] == timestamp
    assert record.get("client_customer_key") == client_customer_key
    assert record.get("context") == context


def check_usage_record(
    record: dict[str, Any],
    usage: dict[str, Any],
    *,
    config_id: str = "cfg",
    service_id: str = "svc",
    response_id: str | None = None,
    timestamp: str | None = None,
    client_customer_key: str | None = None,
    context: dict[str, Any] | None = None,
) -> None:
    """A /track-usage record as stored: exactly the expected keys and values."""
    keys = {"config_id", "service_id", "timestamp", "response_id", "usage"}
    keys |= {"client_customer_key"} if client_customer_key is not None else set()
    keys |= {"context"} if context is not None else set()
    assert set(record) - _BOOKKEEPING == keys
    assert (record["config_id"], record["service_id"], record["usage"]) == (
        config_id,
        service_id,
        usage,
    )
    _check_common(
        record,
        response_id=response_id,
        timestamp=timestamp,
        client_customer_key=client_customer_key,
        context=context,
    )


def check_track_record(
    record: dict[str, Any],
    api_id: str,
    service_key: str,
    payload: dict[str, Any],
    *,
    response_id: str | None = None,
    timestamp: str | None = None,
    client_customer_key: str | None = None,
    context: dict[str, Any] | None = None,
    legacy: bool = False,
) -> None:
    """A /track record as stored: exactly the expected keys and values.

    The current record (the default) sends ``service_key`` ``"api_id::service_key"`` and
    ``customer_key``; the older one (``legacy``) ``api_id``, the bare ``service_key`` and
    ``client_customer_key``.
    """
    customer_field = "client_customer_key" if legacy else "customer_key"
    keys = {"service_key", "response_id", "timestamp", "payload"}
    keys |= {"api_id"} if legacy else set()
    keys |= {customer_field} if client_customer_key is not None else set()
    keys |= {"context"} if context is not None else set()
    assert set(record) - _BOOKKEEPING == keys
    if legacy:
        assert (record["api_id"], record["service_key"]) == (api_id, service_key)
    else:
        assert record["service_key"] == f"{api_id}::{service_key}"
    assert record["payload"] == payload
    assert record.get(customer_field) == client_customer_key
    _check_common(
        record,
        response_id=response_id,
        timestamp=timestamp,
        client_customer_key=record.get("client_customer_key"),
        context=context,
    )


@contextlib.contextmanager
def restored_aicm_logging() -> Iterator[None]:
    """Undo what log_file/log_level do to the ``aicm`` logger, so later tests are unaffected."""
    logger = logging.getLogger("aicm")
    level, handlers = logger.level, list(logger.handlers)
    try:
        yield
    finally:
        for handler in list(logger.handlers):
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        logger.setLevel(level)
