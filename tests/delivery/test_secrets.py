"""The API key shows up nowhere: logs (even DEBUG with bodies), files, errors, reprs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from delivery_helpers import API, SERVICE, USAGE, new_ids, wait_until

from aicm import AicmError, AsyncTracker, get_global_delivery_health
from aicm._io import logfile
from aicm.collector import Faults, LocalCollector

pytestmark = pytest.mark.anyio

SECRET = "sk-live-SECRET-0123456789-do-not-leak"


@pytest.fixture
def debug_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Path]:
    """A log file path; every logger captured at DEBUG; the aicm logger restored after."""
    path = tmp_path / "aicm.log"
    caplog.set_level(logging.DEBUG)
    aicm_logger = logging.getLogger("aicm")
    level = aicm_logger.level
    try:
        yield path
    finally:
        handler = logfile._files.pop(str(path.resolve()), None)
        if handler is not None:
            aicm_logger.removeHandler(handler)
            handler.close()
        aicm_logger.setLevel(level)


@pytest.mark.parametrize("delivery_type", ["immediate", "mem_queue", "persistent_queue"])
async def test_the_key_never_leaks(
    collector: LocalCollector,
    tmp_path: Path,
    debug_log: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    delivery_type: str,
) -> None:
    """Through 401s, 5xx, dead letters and success, no log, file, error or repr has the key."""
    monkeypatch.setenv("AICM_MAX_ATTEMPTS", "2")
    seen: list[str] = []  # every text the SDK produced that a user could see
    queued = delivery_type != "immediate"
    ids = new_ids(6)
    async with AsyncTracker(
        aicm_api_key=SECRET,
        aicm_api_base=collector.api_base,
        delivery_type=delivery_type,
        db_path=str(tmp_path / "queue.db"),
        batch_interval=0.01,
        log_level="DEBUG",
        log_file=str(debug_log),
        log_bodies=True,
    ) as tracker:
        phases = [
            Faults(require_api_key="a-different-key"),
            Faults(failure_rate=1.0, failure_status=503),
            Faults(reject_response_ids={ids[2]}, reject_status=422),
        ]
        for faults, rid in zip(phases, ids, strict=False):
            collector.set_faults(faults)
            try:
                await tracker.track(API, SERVICE, USAGE, response_id=rid)
            except AicmError as exc:
                assert not queued
                seen += [str(exc), repr(exc), str(getattr(exc, "body", "")), str(exc.__cause__)]
            if queued:
                assert await wait_until(lambda: bool(tracker.health().last_error))
                await tracker.flush(0.3)
            seen += [repr(tracker.health()), str(tracker.health().last_error)]
        collector.set_faults(Faults())
        for rid in ids[3:]:
            await tracker.track(API, SERVICE, USAGE, response_id=rid)
        await tracker.flush(5)
        seen += [repr(tracker), repr(tracker.client), repr(tracker.settings), str(tracker.settings)]
        seen += [repr(tracker.engine), repr(get_global_delivery_health())]
        seen += [repr(d) for d in tracker.dead_letters()]
    seen += [caplog.text, *(r.getMessage() for r in caplog.records)]
    seen += [str(r.exc_info[1]) for r in caplog.records if r.exc_info and r.exc_info[1]]
    assert any("HTTP 401" in text for text in seen), "the 401 phase left no trace"
    for text in seen:
        assert SECRET not in text
    written = check_files(tmp_path)
    assert debug_log in written
    assert ("sending 1 record(s) to /track: ['{" if queued else "HTTP 401") in written[debug_log]
    if delivery_type == "persistent_queue":
        assert tmp_path / "queue.db" in written


def check_files(folder: Path) -> dict[Path, str]:
    """Assert no file under ``folder`` holds the key; return each file's text."""
    written: dict[Path, str] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data, path
            written[path] = data.decode("utf-8", "replace")
    return written
