"""``LocalCollector``'s life cycle and Python API: quick start, clean stop, restart, helpers."""

from __future__ import annotations

import gc
import json
import os
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest

from aicm._core.exceptions import ConfigError
from aicm.collector import Faults, LocalCollector

from .helpers import CONFIGS, track_record, usage_record


def _collector_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aicm-collector"]


def test_starts_quickly_on_a_free_loopback_port_and_stops_cleanly() -> None:
    """start() returns in under 0.5 s with a bound port; stop() leaves no thread and no warning."""
    before = len(_collector_threads())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        started = time.perf_counter()
        collector = LocalCollector().start()
        assert time.perf_counter() - started < 0.5
        try:
            assert collector.port > 0
            assert collector.api_base == f"http://127.0.0.1:{collector.port}"
            assert collector.api_url == "/api/v1"
            assert collector.url == collector.api_base + "/api/v1"
            assert httpx.get(collector.api_base + "/_collector/health").status_code == 200
            db_path = collector.db_path
        finally:
            collector.stop()
        gc.collect()
    assert len(_collector_threads()) == before
    assert not os.path.exists(db_path)
    collector.stop()  # a second stop is harmless


def test_python_api_needs_a_running_collector() -> None:
    """Reading records or the URL of a collector that is not running raises a clear error."""
    collector = LocalCollector()
    with pytest.raises(RuntimeError, match="not running"):
        collector.records("track")
    with pytest.raises(RuntimeError, match="not running"):
        _ = collector.api_base
    assert "stopped" in repr(collector)


def test_records_count_and_wait_for_count(collector: LocalCollector) -> None:
    """records()/count() read what arrived; wait_for_count polls until enough or the timeout."""
    with httpx.Client(base_url=collector.url) as client:
        client.post("/track", json={"tracked": [track_record(), track_record()]})
        client.post("/track-usage", json={"usage_records": [usage_record()]})
    assert collector.wait_for_count("track", 2, timeout=1.0)
    assert collector.count("track_usage") == collector.count("track-usage") == 1
    started = time.perf_counter()
    assert not collector.wait_for_count("track", 3, timeout=0.1)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(ValueError, match="record kind"):
        collector.count("bogus")


def test_wait_for_count_sees_records_sent_from_another_thread(collector: LocalCollector) -> None:
    """wait_for_count returns True as soon as a background sender's records are stored."""

    def send_later() -> None:
        time.sleep(0.05)
        httpx.post(collector.url + "/track", json={"tracked": [track_record()]})

    sender = threading.Thread(target=send_later)
    sender.start()
    try:
        assert collector.wait_for_count("track", 1, timeout=3.0)
    finally:
        sender.join()


def test_a_given_db_file_keeps_records_across_a_restart_on_the_same_port(tmp_path: Path) -> None:
    """With db_path a stopped collector restarts on its port with its records, still deduping."""
    db = tmp_path / "collector.sqlite3"
    record = track_record()
    collector = LocalCollector(db_path=db, faults=Faults(fail_first=1))
    with collector:
        port = collector.port
        assert httpx.post(collector.url + "/track", json={"tracked": [record]}).status_code == 503
        assert httpx.post(collector.url + "/track", json={"tracked": [record]}).status_code == 202
    assert db.exists()
    with collector:
        assert collector.port == port
        assert collector.faults == Faults(fail_first=1)
        collector.set_faults(Faults())
        assert collector.count("track") == 1
        httpx.post(collector.url + "/track", json={"tracked": [record]})
        assert collector.count("track") == 1


def test_configs_come_from_a_file_holding_the_object_or_the_list(tmp_path: Path) -> None:
    """configs_path reads {"service_configs": [...]} or the bare list; bad files are ConfigError."""
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"service_configs": CONFIGS, "triggered_limits": {}}))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(CONFIGS))
    for path in (wrapped, bare):
        with LocalCollector(configs_path=path) as collector:
            body = httpx.get(collector.url + "/configs").json()
            assert body["service_configs"] == CONFIGS
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match=r"broken\.json"):
        LocalCollector(configs_path=broken).start()
    with pytest.raises(ValueError, match="not both"):
        LocalCollector(configs=CONFIGS, configs_path=bare)


def test_a_busy_port_is_a_clear_error(collector: LocalCollector) -> None:
    """Starting on a port already taken raises RuntimeError and leaves no thread behind."""
    before = len(_collector_threads())
    with pytest.raises(RuntimeError, match="could not start"):
        LocalCollector(port=collector.port).start()
    assert len(_collector_threads()) == before


def test_set_faults_needs_faults(collector: LocalCollector) -> None:
    """set_faults refuses anything but a Faults instance."""
    with pytest.raises(TypeError):
        collector.set_faults({"fail_first": 1})  # type: ignore[arg-type]


def test_create_app_serves_the_contract_and_closes_its_store_at_shutdown() -> None:
    """create_app gives an ASGI app whose lifespan shutdown closes and removes its temp store."""
    from starlette.testclient import TestClient

    from aicm.collector import create_app

    app = create_app(configs=CONFIGS, faults={"fail_first": 1})
    with TestClient(app, base_url="http://collector") as client:
        assert client.get("/api/v1/configs").status_code == 503
        assert client.get("/api/v1/configs").json()["service_configs"] == CONFIGS
        response = client.post("/api/v1/track", json={"tracked": [track_record()]})
        assert response.status_code == 202
        db_path = app.state.collector.store.path
        assert os.path.exists(db_path)
    assert not os.path.exists(db_path)
