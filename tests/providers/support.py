"""Shared by the built-in provider tests: reading the ``/track`` records the collector holds."""

from __future__ import annotations

from typing import Any

from aicm.collector import LocalCollector


def track_records(collector: LocalCollector) -> list[dict[str, Any]]:
    """The ``/track`` records the collector stored, without its own bookkeeping."""
    return [
        {k: v for k, v in r.items() if k not in ("received_at", "user_agent") and v is not None}
        for r in collector.records("track")
    ]


def one_track(collector: LocalCollector) -> dict[str, Any]:
    """The single ``/track`` record the collector holds; no ``/track-usage`` record beside it."""
    records = track_records(collector)
    assert len(records) == 1, records
    assert collector.records("track_usage") == []
    return records[0]


def sdk_http(client_class: type[Any]) -> Any:
    """The httpx package an SDK's HTTP client class is built on (``httpx``, or the renamed
    copy some SDK versions ship), for in-process ``MockTransport`` answers."""
    import importlib

    base = next(c for c in client_class.__mro__ if c.__name__ in ("Client", "AsyncClient"))
    return importlib.import_module(base.__module__.partition(".")[0])
