"""The queue's store operations, one at a time, on real files: claims, leases, acks, retries,
dead letters, expiry and rows aicm did not write, checked row by row with plain sqlite3."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aicm._io.sqlite import claims, count_pending, list_queue, purge_rows, retry_dead
from aicm._io.sqlite.claims import Scope
from aicm._io.sqlite.db import open_async_db
from aicm._io.sqlite.schema import DEAD, PENDING, connect, file_lock
from aicm._io.sqlite.writer import insert

ROOT = "http://127.0.0.1:9/api/v1"
MINE = Scope(ROOT, "fp", "owner-a")
THEIRS = Scope(ROOT, "fp", "owner-b")
OTHER_KEY = Scope(ROOT, "other-fp", "owner-a")


class Store:
    """A queue file and one connection to it, with the file's lock, as an AsyncDB holds them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        self.lock = file_lock(path)

    def add(self, *rids: str, scope: Scope = MINE, now: float | None = None) -> None:
        rows = [("/track", rid, f'{{"response_id": "{rid}"}}') for rid in rids]
        when = time.time() if now is None else now
        insert(self.conn, self.lock, rows, scope.api_root, scope.key_fp, when)

    def claim(self, limit: int = 10, *, scope: Scope = MINE, lease: float = 60.0) -> list[str]:
        """Claim; the response ids taken, in id order."""
        now = time.time()
        rows = claims.claim(self.conn, self.lock, scope, limit, now, now + lease)
        return [str(r[2]) for r in rows]

    def ids(self, *rids: str) -> list[int]:
        marks = ", ".join("?" * len(rids))
        found = self.select(f"SELECT id FROM records WHERE response_id IN ({marks})", rids)
        return [int(str(r[0])) for r in found]

    def select(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """A query on a connection of its own: what another process would see."""
        conn = sqlite3.connect(self.path)
        try:
            return list(conn.execute(sql, params).fetchall())
        finally:
            conn.close()

    def row(self, rid: str) -> tuple[object, ...]:
        """(state, attempts, lease_owner, last_error, dead_at is set) of one row."""
        (found,) = self.select(
            "SELECT state, attempts, lease_owner, last_error, dead_at IS NOT NULL FROM records"
            " WHERE response_id = ?",
            (rid,),
        )
        return found


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "queue.db")
    yield opened
    opened.conn.close()


# -- claims and leases ---------------------------------------------------------------------


def test_a_claim_leases_fresh_rows_oldest_first_up_to_its_limit(store: Store) -> None:
    store.add("a", "b", "c")
    assert store.claim(2) == ["a", "b"]
    assert store.row("a") == (PENDING, 1, "owner-a", None, 0)
    assert store.row("c") == (PENDING, 0, None, None, 0)
    assert store.claim(10) == ["c"]
    assert store.claim(10) == []


def test_a_claim_returns_each_row_as_written(store: Store) -> None:
    written = time.time() - 3.25
    store.add("a", now=written)
    now = time.time()
    (row,) = claims.claim(store.conn, store.lock, MINE, 5, now, now + 60)
    assert row == (store.ids("a")[0], "/track", "a", '{"response_id": "a"}', written, 1)


def test_a_live_lease_is_not_claimed_by_another_owner(store: Store) -> None:
    store.add("a")
    assert store.claim(scope=MINE) == ["a"]
    assert store.claim(scope=THEIRS) == []


def test_an_expired_lease_is_claimed_again_with_one_more_attempt(store: Store) -> None:
    store.add("a")
    assert store.claim(lease=0.01) == ["a"]
    assert store.claim(scope=THEIRS) == []  # not yet: the lease runs
    time.sleep(0.03)
    assert store.claim(scope=THEIRS) == ["a"]
    assert store.row("a") == (PENDING, 2, "owner-b", None, 0)


def test_claims_see_only_their_root_and_key(store: Store) -> None:
    store.add("theirs", scope=OTHER_KEY)
    store.add("mine")
    assert store.claim() == ["mine"]
    assert store.claim(scope=OTHER_KEY) == ["theirs"]


# -- acks, retries, dead letters -------------------------------------------------------------


def test_an_ack_deletes_only_the_rows_the_owner_holds(store: Store) -> None:
    store.add("a", "b")
    store.claim(1)  # a: mine
    store.claim(1, scope=THEIRS)  # b: theirs
    a, b = store.ids("a", "b")
    claims.settle(store.conn, store.lock, MINE.owner, [a, b], (), time.time())
    assert [r[0] for r in store.select("SELECT response_id FROM records")] == ["b"]
    # No id named in an ack is ever given to a new row: not even the newest one's.
    claims.settle(store.conn, store.lock, THEIRS.owner, [b], (), time.time())
    store.add("c")
    assert store.ids("c") == [b + 1]


def test_a_release_makes_the_row_due_at_the_time_given(store: Store) -> None:
    store.add("a", "b")
    store.claim()
    soon = time.time() + 0.05
    later = time.time() + 60
    claims.release(store.conn, store.lock, MINE.owner, store.ids("a"), soon, "503")
    claims.release(store.conn, store.lock, MINE.owner, store.ids("b"), later, "503")
    assert store.row("a") == (PENDING, 1, None, "503", 0)
    assert store.claim() == []  # neither is due yet
    time.sleep(0.08)
    assert store.claim() == ["a"]
    assert store.row("a") == (PENDING, 2, "owner-a", "503", 0)
    assert claims.read(store.conn, store.lock, claims.NEXT_RETRY, (ROOT, "fp")) != [(None,)]


def test_a_release_by_another_owner_changes_nothing(store: Store) -> None:
    store.add("a")
    store.claim()
    claims.release(store.conn, store.lock, THEIRS.owner, store.ids("a"), 0.0, "not mine")
    assert store.row("a") == (PENDING, 1, "owner-a", None, 0)


def test_a_dead_letter_keeps_the_row_with_its_reason_and_out_of_claims(store: Store) -> None:
    store.add("a", "b")
    store.claim()
    (a,) = store.ids("a")
    now = time.time()
    claims.settle(store.conn, store.lock, "x", (), [(a, "400: bad")], now)
    assert store.row("a") == (PENDING, 1, "owner-a", None, 0)  # not the holder: untouched
    claims.settle(store.conn, store.lock, MINE.owner, (), [(a, "400: bad")], now)
    assert store.row("a") == (DEAD, 1, None, "400: bad", 1)
    claims.release(store.conn, store.lock, MINE.owner, store.ids("b"), 0.0, "503")
    assert store.claim() == ["b"]
    assert count_pending(store.path, api_root=ROOT, key_fp="fp")[0] == 1


def test_settling_unwritten_outcomes_needs_no_lease(store: Store) -> None:
    """What the service settled while the disk was full is recorded by id, whoever leases."""
    store.add("a", "b", "c")
    store.claim(scope=THEIRS)
    a, b = store.ids("a", "b")
    claims.settle(store.conn, store.lock, None, [a], [(b, "400")], time.time())
    assert [r[0] for r in store.select("SELECT response_id FROM records ORDER BY id")] == [
        "b",
        "c",
    ]
    assert store.row("b")[0] == DEAD


def test_freeing_a_gone_owners_leases_makes_its_rows_due_now(store: Store) -> None:
    store.add("a", "b")
    store.claim(1, scope=THEIRS)
    store.claim(1, scope=MINE)
    freed = claims.free_leases(store.conn, store.lock, MINE, [THEIRS.owner], time.time())
    assert freed == 1
    assert store.row("a") == (PENDING, 1, None, "its lease's owner process had ended", 0)
    assert store.claim() == ["a"]


# -- reading without writing (the disk is full) ---------------------------------------------


def test_a_peek_reads_what_a_claim_would_take_and_writes_nothing(store: Store) -> None:
    store.add("a", "b", "c")
    store.claim(1, scope=THEIRS)  # a: under their live lease
    before = store.select("SELECT * FROM records ORDER BY id")
    (c,) = store.ids("c")
    rows = claims.peek(store.conn, store.lock, MINE, 10, (time.time(), 0), frozenset({c}))
    assert [r[2] for r in rows] == ["b"]
    assert store.select("SELECT * FROM records ORDER BY id") == before


# -- rows aicm did not write ------------------------------------------------------------------


@pytest.mark.parametrize("json_functions", [True, False])
def test_a_row_json_cannot_carry_is_claimed_row_by_row(
    store: Store, monkeypatch: pytest.MonkeyPatch, json_functions: bool
) -> None:
    """A body stored as bytes by another program: the claim still leases and returns every
    row (that one as bytes, for the actor to dead-letter), and keeps using JSON afterwards."""
    monkeypatch.setattr(claims, "_json_functions", json_functions)
    store.add("good", "bad")
    conn = sqlite3.connect(store.path)
    with conn:
        conn.execute("UPDATE records SET body = ? WHERE response_id = 'bad'", (b"\xff\xfe",))
    conn.close()
    now = time.time()
    rows = claims.claim(store.conn, store.lock, MINE, 10, now, now + 60)
    assert [(r[2], r[3]) for r in rows] == [
        ("good", '{"response_id": "good"}'),
        ("bad", b"\xff\xfe"),
    ]
    assert claims._json_functions is json_functions


# -- the administrator --------------------------------------------------------------------------


def test_retrying_a_dead_row_makes_it_claimable_again(store: Store) -> None:
    store.add("a")
    store.claim()
    (a,) = store.ids("a")
    claims.settle(store.conn, store.lock, MINE.owner, (), [(a, "400")], time.time())
    assert [e.response_id for e in list_queue(store.path, state="dead")] == ["a"]
    outcome = retry_dead(store.path, [a, a + 100])
    assert (outcome.retried, outcome.not_dead) == (1, (a + 100,))
    assert store.claim() == ["a"]
    assert store.row("a") == (PENDING, 2, "owner-a", "400", 0)


def test_a_purge_keeps_rows_under_a_live_lease(store: Store) -> None:
    store.add("leased", "waiting")
    store.claim(1)
    outcome = purge_rows(store.path, state="pending")
    assert (outcome.deleted, outcome.kept_leased) == (1, 1)
    assert [r[0] for r in store.select("SELECT response_id FROM records")] == ["leased"]


# -- async access ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_operations_run_whole_on_the_connection_thread(tmp_path: Path) -> None:
    """Through an AsyncDB: a write, a claim, and an error raised where the caller awaits,
    after which the connection goes on."""
    path = tmp_path / "queue.db"
    db = await open_async_db(path)
    try:
        await db.run(insert, [("/track", "a", "{}"), ("/track", "b", "{}")], ROOT, "fp", 1.0)
        now = time.time()
        rows = await db.run(claims.claim, MINE, 10, now, now + 60)
        assert [r[2] for r in rows] == ["a", "b"]
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await db.run(claims.read, "SELECT * FROM nowhere", ())
        await db.run(insert, [("/track", "c", "{}")], ROOT, "fp", 1.0)
        found = await db.run(claims.read, "SELECT response_id FROM records ORDER BY id", ())
        assert [r[0] for r in found] == ["a", "b", "c"]
    finally:
        await db.close()


@pytest.mark.anyio
async def test_a_closed_async_connection_refuses_work(tmp_path: Path) -> None:
    db = await open_async_db(tmp_path / "queue.db")
    await db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        await db.run(claims.read, "SELECT 1", ())
