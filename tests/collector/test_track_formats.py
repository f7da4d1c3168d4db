"""Both /track records at the collector and in aicm.testing: current, older, stored files."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicm._core.wire import check_track_record, record_moment
from aicm.collector import LocalCollector
from aicm.collector._store import SCHEMA_VERSION, PendingWrite, RecordStore

from .helpers import new_id, track_record


def current_record(**fields: Any) -> dict[str, Any]:
    """A valid current /track record (no api_id, customer_key); keywords override fields."""
    record: dict[str, Any] = {
        "service_key": "openai::gpt-4o",
        "response_id": new_id(),
        "timestamp": "2024-01-01T00:00:00Z",
        "payload": {"input_tokens": 10, "output_tokens": 5},
    }
    record.update(fields)
    return record


def test_a_current_record_has_no_problems() -> None:
    """The current record passes with either timestamp form and its optional fields."""
    assert check_track_record(current_record()) == []
    assert check_track_record(current_record(timestamp="1733590000.123456")) == []
    assert check_track_record(current_record(customer_key="acme", context={"a": 1})) == []


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (current_record(service_key="gpt-4o"), "field 'service_key' must be 'vendor::model'"),
        (current_record(client_customer_key="c"), "unexpected field 'client_customer_key'"),
        (track_record(customer_key="c"), "unexpected field 'customer_key'"),
        (current_record(timestamp="soon"), "neither ISO-8601 nor epoch seconds"),
        (track_record(timestamp="1733590000"), "not an ISO-8601 date-time"),
        (current_record(customer_key=7), "field 'customer_key' must be a string or null"),
        (current_record(timestamp="nan"), "neither ISO-8601 nor epoch seconds"),
    ],
)
def test_each_record_form_is_held_to_its_own_fields(record: dict[str, Any], problem: str) -> None:
    """A record with api_id is the older form, any other the current one; each named wrongs."""
    assert any(problem in p for p in check_track_record(record)), check_track_record(record)


def test_record_moment_reads_iso_and_epoch_seconds() -> None:
    """When a record happened, from ISO-8601 with an offset or an epoch-seconds string."""
    expected = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert record_moment("2024-01-01T00:00:00Z") == expected
    assert record_moment("2024-01-01T01:00:00+01:00") == expected
    assert record_moment(str(expected.timestamp())) == expected
    assert record_moment("2024-01-01T00:00:00") is None  # no offset: unknown
    assert record_moment(None) is None


@pytest.mark.anyio
async def test_both_forms_are_stored_and_read_back_as_sent(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """One batch of both forms: each stored once and read back in the form it was sent."""
    current = current_record(customer_key="acme", timestamp="1733590000.5", context={"k": 1})
    legacy = track_record(service_key="gpt-4o", client_customer_key="acme")
    response = await client.post("/track", json={"tracked": [current, legacy, current]})
    assert response.status_code == 202
    assert [r["status"] for r in response.json()["results"]] == ["queued"] * 3
    stored = [
        {k: v for k, v in r.items() if k not in ("received_at", "user_agent")}
        for r in collector.records("track")
    ]
    assert stored == [current, legacy]
    assert collector.stats()["records"]["track"]["duplicates"] == 1


def _old_store(path: Path, record: dict[str, Any]) -> None:
    """A collector file as version 2 wrote it (api_id NOT NULL), holding one record."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE track (
            seq INTEGER PRIMARY KEY, api_id TEXT NOT NULL, service_key TEXT NOT NULL,
            response_id TEXT NOT NULL, timestamp TEXT NOT NULL, payload TEXT NOT NULL,
            client_customer_key TEXT, context TEXT, received_at REAL NOT NULL, user_agent TEXT
        );
        CREATE TABLE track_usage (
            seq INTEGER PRIMARY KEY, service TEXT NOT NULL, response_id TEXT NOT NULL,
            config_id TEXT, service_id TEXT, timestamp TEXT, usage TEXT,
            client_customer_key TEXT, context TEXT, base_url TEXT, extra TEXT,
            received_at REAL NOT NULL, user_agent TEXT
        );
        PRAGMA user_version=2;
        """
    )
    conn.execute(
        "INSERT INTO track (api_id, service_key, response_id, timestamp, payload,"
        " client_customer_key, context, received_at, user_agent) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            record["api_id"],
            record["service_key"],
            record["response_id"],
            record["timestamp"],
            '{"input_tokens": 10, "output_tokens": 5}',
            None,
            None,
            1.0,
            "aicm-sdk/0.1.0",
        ),
    )
    conn.commit()
    conn.close()


def test_a_version_2_file_keeps_its_records_and_takes_current_ones(tmp_path: Path) -> None:
    """Opening an older collector file migrates it: old records kept, dedup keys too."""
    path = tmp_path / "old.sqlite3"
    old = track_record(service_key="gpt-4o")
    _old_store(path, old)
    store = RecordStore(path)
    try:
        new = current_record()
        counts = store.add_many(
            [
                PendingWrite("track", [new], 2.0, "ua"),
                PendingWrite("track", [old], 2.0, "ua"),  # already stored: not again
            ]
        )
        assert counts == [1, 0]
        records = store.records("track")
        assert [r.get("api_id") for r in records] == ["openai", None]
        assert [r["response_id"] for r in records] == [old["response_id"], new["response_id"]]
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        notnull = {row[1]: row[3] for row in conn.execute("PRAGMA table_info(track)")}
        assert notnull["api_id"] == 0
    finally:
        conn.close()


# -- aicm.testing's capture takes both records too ---------------------------------------------


def test_capture_accepts_both_forms_and_matches_them_as_tracked() -> None:
    """capture() stores both record forms; assert_tracked matches them by the call's terms."""
    from aicm import Tracker
    from aicm.testing import capture

    with (
        capture() as captured,
        Tracker(aicm_api_key="k") as current,
        Tracker(aicm_api_key="k", track_format="legacy") as legacy,
    ):
        current.track("openai_chat", "gpt-5-mini", {"n": 1}, client_customer_key="acme")
        legacy.track("openai", "gpt-5-mini", {"n": 2}, customer_key="acme")
    assert [r.get("api_id") for r in captured.track_records] == [None, "openai"]
    assert captured.track_records[0]["service_key"] == "openai::gpt-5-mini"
    captured.assert_tracked(api_id="openai_chat", service_key="gpt-5-mini", count=1)
    captured.assert_tracked(service_key="gpt-5-mini", client_customer_key="acme", count=2)
    captured.assert_tracked(service_key="openai::gpt-5-mini", customer_key="acme", count=1)
    with pytest.raises(AssertionError):
        captured.assert_tracked(api_id="anthropic", count=1)


def test_capture_accepts_the_service_sdks_record_and_refuses_mixed_ones() -> None:
    """An epoch-seconds timestamp passes; a record mixing both forms' fields is refused."""
    from aicm.testing import CapturedRecords

    captured = CapturedRecords()
    body = {
        "tracked": [
            current_record(timestamp="1733590000.5", customer_key="acme"),
            current_record(client_customer_key="acme"),
            current_record(service_key="gpt-4o"),
        ]
    }
    answer = captured.ingest("/track", json.dumps(body).encode())
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["queued", "error", "error"]
    assert "unexpected field 'client_customer_key'" in results[1]["errors"]
    assert any("vendor::model" in e for e in results[2]["errors"])
    assert len(captured) == 1


@pytest.mark.anyio
async def test_the_client_takes_current_form_mappings(collector: LocalCollector) -> None:
    """AsyncCostManagerClient.track takes a "vendor::model" mapping with no api_id, and
    customer_key; it is sent in the form the track_format setting names."""
    from aicm import AsyncCostManagerClient, resolve_settings

    record = {
        "service_key": "openai::gpt-4o",
        "payload": {"input_tokens": 1},
        "customer_key": "acme",
        "response_id": "client-current",
    }
    async with AsyncCostManagerClient(aicm_api_key="k", aicm_api_base=collector.api_base) as c:
        await c.track([record])
    legacy_settings = resolve_settings(
        api_key="k", api_base=collector.api_base, track_format="legacy"
    )
    async with AsyncCostManagerClient(settings=legacy_settings) as c:
        await c.track([{**record, "response_id": "client-legacy"}])
    stored = {r["response_id"]: r for r in collector.records("track")}
    assert stored["client-current"]["customer_key"] == "acme"
    assert "api_id" not in stored["client-current"]
    legacy = stored["client-legacy"]
    assert (legacy["api_id"], legacy["service_key"], legacy["client_customer_key"]) == (
        "openai",
        "openai::gpt-4o",
        "acme",
    )
