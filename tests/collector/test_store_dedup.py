"""The store's dedup on (service, response_id), kept in memory: exact, durable, flat."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aicm import ConfigError
from aicm.collector._store import SCHEMA_VERSION, PendingWrite, RecordStore

from .helpers import track_record, usage_record

# Version 1 of the schema, as aicm made it: unique indexes did the dedup.
_V1_SCHEMA = """
CREATE TABLE track (
    seq INTEGER PRIMARY KEY, api_id TEXT NOT NULL, service_key TEXT NOT NULL,
    response_id TEXT NOT NULL, timestamp TEXT NOT NULL, payload TEXT NOT NULL,
    client_customer_key TEXT, context TEXT, received_at REAL NOT NULL, user_agent TEXT
);
CREATE UNIQUE INDEX track_event ON track (service_key, response_id);
CREATE TABLE track_usage (
    seq INTEGER PRIMARY KEY, service TEXT NOT NULL, response_id TEXT NOT NULL,
    config_id TEXT, service_id TEXT, timestamp TEXT, usage TEXT, client_customer_key TEXT,
    context TEXT, base_url TEXT, extra TEXT, received_at REAL NOT NULL, user_agent TEXT
);
CREATE UNIQUE INDEX track_usage_event ON track_usage (service, response_id);
PRAGMA user_version=1;
"""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a test's collector database goes."""
    return tmp_path / "records.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[RecordStore]:
    """A store on a fresh file, closed after the test."""
    store = RecordStore(db_path)
    yield store
    store.close()


def _write(store: RecordStore, kind: Any, records: list[dict[str, Any]]) -> int:
    (stored,) = store.add_many([PendingWrite(kind, records, 1.0, None)])
    return stored


def _ids(store: RecordStore, kind: Any) -> list[str]:
    return [r["response_id"] for r in store.records(kind)]


def _indexes(path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as conn:
        return {
            table: [row[1] for row in conn.execute(f"PRAGMA index_list({table})")]
            for table in ("track", "track_usage")
        }


def test_repeats_within_a_batch_and_across_batches_are_stored_once(store: RecordStore) -> None:
    """Each event is stored once, however often it comes; each write counts only its new ones."""
    a, b, c, d = (track_record() for _ in range(4))
    assert _write(store, "track", [a, a, b, dict(a)]) == 2
    assert store.add_many(
        [
            PendingWrite("track", [a, c], 2.0, None),
            PendingWrite("track", [c, d, d], 2.0, None),
            PendingWrite("track", [b], 2.0, None),
        ]
    ) == [1, 1, 0]
    assert _ids(store, "track") == [r["response_id"] for r in (a, b, c, d)]
    assert store.count("track") == 4


def test_the_key_is_the_service_and_the_response_id_per_kind(store: RecordStore) -> None:
    """Another service or kind is another event; usage dedups on service_id, else config_id."""
    rid = "shared-id"
    assert _write(store, "track", [track_record(response_id=rid)]) == 1
    assert _write(store, "track", [track_record(response_id=rid, service_key="other")]) == 1
    by_service = usage_record(response_id=rid, service_id="svc", config_id="cfg")
    same_service = usage_record(response_id=rid, service_id="svc", config_id="another-cfg")
    by_config = usage_record(response_id=rid, config_id="svc")
    del by_config["service_id"]
    no_service = {"response_id": rid}
    assert _write(store, "track_usage", [by_service, same_service]) == 1
    assert _write(store, "track_usage", [by_config]) == 0  # config_id "svc" is service "svc"
    assert _write(store, "track_usage", [no_service, dict(no_service)]) == 1
    assert store.count("track") == 2
    assert store.count("track_usage") == 2


def test_a_reopened_file_dedups_against_what_it_holds(db_path: Path) -> None:
    """The keys of a file's records are read back on open: a repeat stays a repeat."""
    old_track, old_usage = track_record(), usage_record()
    first = RecordStore(db_path)
    try:
        assert _write(first, "track", [old_track]) == 1
        assert _write(first, "track_usage", [old_usage]) == 1
    finally:
        first.close()
    reopened = RecordStore(db_path)
    try:
        new = track_record()
        assert _write(reopened, "track", [old_track, new, new]) == 1
        assert _write(reopened, "track_usage", [old_usage]) == 0
        assert _ids(reopened, "track") == [old_track["response_id"], new["response_id"]]
    finally:
        reopened.close()


def test_a_version_1_file_loses_its_unique_indexes_and_keeps_its_records(db_path: Path) -> None:
    """An old file is migrated on open: indexes dropped, records kept and still deduplicated."""
    with sqlite3.connect(db_path) as conn:
        conn.executescript(_V1_SCHEMA)
        conn.execute(
            "INSERT INTO track (api_id, service_key, response_id, timestamp, payload,"
            " received_at) VALUES ('openai', 'openai::gpt-4o', 'old-1', '2024-01-01T00:00:00Z',"
            " '{\"input_tokens\":1}', 1.0)"
        )
        conn.execute(
            "INSERT INTO track_usage (service, response_id, service_id, received_at)"
            " VALUES ('svc', 'old-2', 'svc', 1.0)"
        )
    assert _indexes(db_path) == {"track": ["track_event"], "track_usage": ["track_usage_event"]}
    store = RecordStore(db_path)
    try:
        assert _indexes(db_path) == {"track": [], "track_usage": []}
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert _ids(store, "track") == ["old-1"]
        assert store.records("track_usage")[0]["service_id"] == "svc"
        assert _write(store, "track", [track_record(response_id="old-1")]) == 0
        assert (
            _write(store, "track_usage", [usage_record(response_id="old-2", service_id="svc")]) == 0
        )
        assert _write(store, "track", [track_record(response_id="new-1")]) == 1
    finally:
        store.close()


def test_a_file_of_a_newer_schema_is_refused_untouched(db_path: Path) -> None:
    """A schema this aicm does not know is a ConfigError naming the file, which stays as it was."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE track (x)")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    before = db_path.read_bytes()
    with pytest.raises(ConfigError, match="newer") as caught:
        RecordStore(db_path)
    assert caught.value.path == str(db_path)
    assert db_path.read_bytes() == before


def test_a_failed_write_leaves_its_keys_unseen_so_a_retry_stores_them(
    store: RecordStore, db_path: Path
) -> None:
    """A transaction SQLite aborts stores nothing and forgets its new keys, not older ones."""
    stored_before = track_record()
    assert _write(store, "track", [stored_before]) == 1
    with sqlite3.connect(db_path) as conn:  # a real failure inside the transaction
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON track WHEN NEW.response_id = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    good = [track_record() for _ in range(3)]
    usage = usage_record()
    writes = [
        PendingWrite("track_usage", [usage], 2.0, None),
        PendingWrite("track", [good[0], good[1], stored_before], 2.0, None),
        PendingWrite("track", [good[2], track_record(response_id="poison")], 2.0, None),
    ]
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        store.add_many(writes)
    assert store.count("track") == 1
    assert store.count("track_usage") == 0
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TRIGGER refuse")
    assert store.add_many([*writes[:2], PendingWrite("track", [good[2]], 2.0, None)]) == [1, 2, 1]
    assert _ids(store, "track") == [r["response_id"] for r in [stored_before, *good]]


def test_an_unencodable_record_fails_its_write_and_frees_the_keys_before_it(
    store: RecordStore,
) -> None:
    """A record SQLite cannot take (a lone surrogate) fails its write; the good ones go on retry."""
    good = [track_record() for _ in range(2)]
    with pytest.raises(UnicodeEncodeError):
        _write(store, "track", [*good, track_record(api_id="\ud800")])
    assert store.count("track") == 0
    assert _write(store, "track", good) == 2


def test_clear_forgets_the_keys_with_the_records(store: RecordStore) -> None:
    """After clear() a record seen before is new again."""
    record, usage = track_record(), usage_record()
    assert _write(store, "track", [record]) == 1
    assert _write(store, "track_usage", [usage]) == 1
    store.clear()
    assert _write(store, "track", [record]) == 1
    assert _write(store, "track_usage", [usage]) == 1


def test_threads_writing_the_same_records_store_each_once(store: RecordStore) -> None:
    """Under the store's lock the keys stay exact: the new-counts of racing writers add up."""
    shared = [track_record() for _ in range(400)]
    counts: list[int] = []

    def write(backwards: bool) -> None:
        for start in range(0, len(shared), 20):
            batch = [*shared[start : start + 20], track_record()]
            counts.append(_write(store, "track", batch[::-1] if backwards else batch))

    threads = [threading.Thread(target=write, args=(i % 2 == 1,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = len(shared) + 4 * (len(shared) // 20)
    assert sum(counts) == store.count("track") == expected
    assert len(set(_ids(store, "track"))) == expected


def test_a_batch_writes_as_many_pages_into_a_big_store_as_into_an_empty_one(
    store: RecordStore, db_path: Path
) -> None:
    """No index on random ids: a 1000-record commit adds the same few WAL pages at any size."""
    assert _indexes(db_path) == {"track": [], "track_usage": []}
    side = sqlite3.connect(db_path)

    def pages_written(batch: list[dict[str, Any]]) -> int:
        side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert _write(store, "track", batch) == len(batch)
        (_, frames, _) = side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)

    try:
        batches = [
            [track_record(response_id=str(uuid.uuid4())) for _ in range(1000)] for _ in range(30)
        ]
        pages = [pages_written(batch) for batch in batches]
    finally:
        side.close()
    # With the old unique index the 30th batch wrote about ten times the first one's pages.
    assert pages[-1] <= pages[0] + 2, pages
    assert store.count("track") == 30_000
