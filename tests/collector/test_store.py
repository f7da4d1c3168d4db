"""The SQLite store and its group commit, without HTTP."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from aicm.collector._store import GroupWriter, PendingWrite, RecordStore

from .helpers import track_record, usage_record


def _write(store: RecordStore, kind: Any, records: list[dict[str, Any]]) -> int:
    (stored,) = store.add_many([PendingWrite(kind, records, 1.0, "ua/1")])
    return stored


def test_records_round_trip_with_their_json_fields_decoded(tmp_path: Path) -> None:
    """What is stored reads back as sent, plus received_at and user_agent."""
    store = RecordStore(tmp_path / "db.sqlite3")
    try:
        plain = track_record()
        full = track_record(client_customer_key="c", context={"n": [1, {"x": None}]})
        usage = usage_record(usage=3.5, context=None, extra_field=["kept"])
        assert _write(store, "track", [plain, full]) == 2
        assert _write(store, "track_usage", [usage]) == 1
        meta = {"received_at": 1.0, "user_agent": "ua/1"}
        assert store.records("track") == [plain | meta, full | meta]
        assert store.records("track_usage") == [usage | meta]
    finally:
        store.close()


def test_a_repeated_event_is_ignored_and_not_counted_as_new(tmp_path: Path) -> None:
    """Dedup on (service, response_id): a repeat stores nothing and counts 0."""
    store = RecordStore(tmp_path / "db.sqlite3")
    try:
        record = track_record()
        assert _write(store, "track", [record, record]) == 1
        assert _write(store, "track", [record]) == 0
        assert _write(store, "track", [dict(record, service_key="other")]) == 1
        counts = store.add_many(
            [
                PendingWrite("track", [track_record()], 2.0, None),
                PendingWrite("track", [record], 2.0, None),
                PendingWrite("track_usage", [usage_record()], 2.0, None),
            ]
        )
        assert counts == [1, 0, 1]
        assert store.count("track") == 3
    finally:
        store.close()


def test_the_file_is_wal_keeps_its_records_and_never_holds_secrets(tmp_path: Path) -> None:
    """A given file is WAL, has no column for secrets, outlives the store and reopens as it was."""
    path = tmp_path / "db.sqlite3"
    store = RecordStore(path)
    _write(store, "track", [track_record()])
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(track)")}
    assert columns == {
        "seq",
        "api_id",
        "service_key",
        "response_id",
        "timestamp",
        "payload",
        "client_customer_key",
        "context",
        "received_at",
        "user_agent",
    }
    reopened = RecordStore(path)
    try:
        assert reopened.count("track") == 1
        reopened.clear()
        assert reopened.count("track") == 0
    finally:
        reopened.close()
    assert path.exists()


def test_a_temporary_store_is_removed_on_close() -> None:
    """Without a path the store makes its own file and deletes it (and its WAL) on close."""
    store = RecordStore()
    _write(store, "track", [track_record()])
    path = store.path
    assert os.path.exists(path)
    store.close()
    store.close()
    assert not any(os.path.exists(path + s) for s in ("", "-wal", "-shm"))
    with pytest.raises(RuntimeError, match="closed"):
        store.count("track")


@pytest.mark.anyio
async def test_concurrent_writes_share_a_commit_and_each_learns_its_own_count(
    tmp_path: Path,
) -> None:
    """Writers that arrive together are committed in one go; each gets its new-record count."""
    store = RecordStore(tmp_path / "db.sqlite3")
    commits: list[int] = []
    add_many = store.add_many

    def counting_add_many(writes: Any) -> list[int]:
        commits.append(len(writes))
        return add_many(writes)

    store.add_many = counting_add_many  # type: ignore[method-assign]
    writer = GroupWriter(store)
    shared = track_record()
    results: dict[int, int] = {}

    async def write(i: int) -> None:
        records = [shared] if i % 2 else [track_record()]
        results[i] = await writer.add("track", records, received_at=1.0, user_agent=None)

    try:
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(write, i)
        assert sum(results.values()) == 6  # five fresh records and the shared one once
        assert sorted(results[i] for i in range(1, 10, 2)) == [0, 0, 0, 0, 1]
        assert sum(commits) == 10
        assert len(commits) < 10
        assert store.count("track") == 6
    finally:
        store.close()


@pytest.mark.anyio
async def test_one_unwritable_write_fails_alone_in_its_group(tmp_path: Path) -> None:
    """A write SQLite refuses (here a lone surrogate) fails; the rest of its group is stored."""
    store = RecordStore(tmp_path / "db.sqlite3")
    writer = GroupWriter(store)
    outcomes: dict[str, object] = {}

    async def write(name: str, record: dict[str, Any]) -> None:
        try:
            outcomes[name] = await writer.add("track", [record], received_at=1.0, user_agent=None)
        except UnicodeEncodeError as exc:
            outcomes[name] = exc

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "good-1", track_record())
            tg.start_soon(write, "poison", track_record(api_id="\ud800"))
            tg.start_soon(write, "good-2", track_record())
        assert outcomes["good-1"] == outcomes["good-2"] == 1
        assert isinstance(outcomes["poison"], UnicodeEncodeError)
        assert store.count("track") == 2
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_failed_group_commit_raises_in_every_writer() -> None:
    """If the store cannot write, every writer of the group gets the error (none hangs)."""
    store = RecordStore()
    store.close()
    writer = GroupWriter(store)
    errors: list[BaseException] = []

    async def write() -> None:
        try:
            await writer.add("track", [track_record()], received_at=1.0, user_agent=None)
        except RuntimeError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(write)
    assert len(errors) == 3


@pytest.mark.anyio
async def test_writes_arriving_after_a_group_is_taken_are_written_next(tmp_path: Path) -> None:
    """A big write and later small ones, duplicates among them, all land exactly once."""
    store = RecordStore(tmp_path / "db.sqlite3")
    big = [track_record() for _ in range(500)]
    writer = GroupWriter(store)
    results: dict[str, int] = {}

    async def write(name: str, records: list[dict[str, Any]], delay: float) -> None:
        await anyio.sleep(delay)
        results[name] = await writer.add("track", records, received_at=1.0, user_agent=None)

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(write, "big", big, 0)
                tg.start_soon(write, "dup", big[:10], 0.001)  # duplicates of the big write
                for i, delay in enumerate((0, 0.001, 0.002)):
                    tg.start_soon(write, f"single-{i}", [track_record()], delay)
        # Which of the big write and its duplicates is stored first depends on scheduling
        # (trio shuffles tasks woken together); each record is counted new exactly once.
        assert results["big"] + results["dup"] == len(big)
        assert results["dup"] in (0, 10)
        assert [results[f"single-{i}"] for i in range(3)] == [1, 1, 1]
        assert store.count("track") == len(big) + 3
    finally:
        store.close()
