"""``aicm queue``: every subcommand as a real subprocess on real queue files made by the SDK."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest

from aicm import Tracker
from aicm.cli import main
from aicm.collector import Faults, LocalCollector

from .conftest import API_KEY, DEAD_IDS, PENDING, Run, aicm_env, run_many, snapshot, states
from .pty_helper import run_in_pty


def stats(aicm: Run, path: Path) -> dict[str, object]:
    """``aicm queue stats --json`` of ``path``."""
    done = aicm("queue", "stats", "--db", str(path), "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def leased(path: Path) -> int:
    """Rows under a live lease, read straight from the file."""
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM records WHERE lease_owner IS NOT NULL AND next_attempt_at > ?",
            (time.time(),),
        ).fetchone()
    conn.close()
    return int(n)


def test_stats_counts_rows_by_state_with_size_and_api_root(
    aicm: Run, queue_file: Path, collector: LocalCollector
) -> None:
    """stats reports 5 pending, 2 dead, none leased, the oldest age, size and API root."""
    data = stats(aicm, queue_file)
    assert (data["pending"], data["dead"], data["leased"]) == (PENDING, 2, 0)
    assert isinstance(data["oldest_pending_age"], float)
    assert data["oldest_pending_age"] >= 0
    assert data["size_bytes"] == sum(
        os.stat(f"{queue_file}{s}").st_size
        for s in ("", "-wal", "-shm")
        if os.path.exists(f"{queue_file}{s}")
    )
    assert data["api_roots"] == {collector.url: PENDING + 2}
    text = aicm("queue", "stats", "--db", str(queue_file))
    assert text.returncode == 0
    assert "pending      5" in text.stdout
    assert "dead         2" in text.stdout
    assert "\033[" not in text.stdout  # not a terminal: no colour


def test_the_default_file_is_the_sdks_db_path(tmp_path: Path, queue_file: Path) -> None:
    """Without --db: AICM_DB_PATH when set, else $XDG_CACHE_HOME/aicm/queue.db (not created)."""
    chosen, default = (
        run_many([["queue", "stats", "--json"]], env=aicm_env(AICM_DB_PATH=str(queue_file)))[0],
        run_many([["queue", "stats"]])[0],
    )
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["path"] == str(queue_file)
    expected = tmp_path / "cache" / "aicm" / "queue.db"
    assert default.returncode == 1
    assert str(expected) in default.stderr
    assert not expected.parent.exists()


def test_list_shows_rows_oldest_first_filtered_and_limited(queue_file: Path) -> None:
    """list --json gives every row with its record; --state and --limit filter the table."""
    everything, one = run_many(
        [
            ["queue", "list", "--db", str(queue_file), "--json"],
            ["queue", "list", "--db", str(queue_file), "--state", "dead", "--limit", "1"],
        ]
    )
    rows = json.loads(everything.stdout)
    assert [r["response_id"] for r in rows] == [*DEAD_IDS, *(f"pending-{i}" for i in range(5))]
    assert [r["state"] for r in rows] == ["dead"] * 2 + ["pending"] * PENDING
    assert "rejected" in rows[0]["last_error"]
    assert rows[2]["record"]["payload"] == {"input_tokens": 100, "output_tokens": 10}
    assert rows[2]["record"]["customer_key"] == "acme"
    assert one.returncode == 0
    lines = one.stdout.splitlines()
    assert "response_id" in lines[0]
    assert [line.split()[2] for line in lines[2:]] == ["/track"]
    assert "dead-1" in one.stdout
    assert "dead-2" not in one.stdout


def test_list_names_the_waiting_state_as_json_and_state_do(aicm: Run, queue_file: Path) -> None:
    """A row waiting to be sent is "pending" in the table, as in --json and --state."""
    done = aicm("queue", "list", "--db", str(queue_file), "--state", "pending")
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    states = [row[1] for row in rows if row and row[0].isdigit()]
    assert states == ["pending"] * PENDING


def test_retry_by_id_makes_one_dead_row_pending_and_due(aicm: Run, queue_file: Path) -> None:
    """retry ID moves that dead row to pending, due now; the other stays dead."""
    with sqlite3.connect(queue_file) as conn:
        (dead_id,) = conn.execute("SELECT id FROM records WHERE response_id = 'dead-2'").fetchone()
    conn.close()
    done = aicm("queue", "retry", "--db", str(queue_file), str(dead_id))
    assert done.returncode == 0, done.stderr
    assert states(queue_file) == {"pending": PENDING + 1, "dead": 1}
    with sqlite3.connect(queue_file) as conn:
        due, owner = conn.execute(
            "SELECT next_attempt_at, lease_owner FROM records WHERE id = ?", (dead_id,)
        ).fetchone()
    conn.close()
    assert due <= time.time()
    assert owner is None


def test_retry_all_and_unknown_ids(aicm: Run, queue_file: Path) -> None:
    """retry --all revives every dead row; an id that is not dead exits 1 and says which."""
    done = aicm("queue", "retry", "--db", str(queue_file), "--all")
    assert done.returncode == 0
    assert "2 dead record(s)" in done.stdout
    assert states(queue_file) == {"pending": PENDING + 2}
    missing = aicm("queue", "retry", "--db", str(queue_file), "9999")
    assert missing.returncode == 1
    assert "9999" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


BAD_CALLS = [
    ["queue", "retry"],
    ["queue", "list", "--state", "bogus"],
    ["queue", "watch", "--interval", "0"],
    ["queue", "purge", "--state", "leased"],
    ["queue", "drain", "--timeout", "-1"],
    ["queue", "stats", "--limit", "3"],
]
MORE_BAD_CALLS = [
    ["queue", "retry", "--all", "1"],
    ["queue", "retry", "one"],
    ["queue", "retry", "0"],
    ["queue", "list", "--limit", "0"],
    ["queue", "watch", "--count", "x"],
    ["queue", "drain", "--timeout", "soon"],
    ["queue", "drain", "--api-base", "ftp://example.com"],
    ["queue", "frobnicate"],
]


def test_bad_arguments_exit_2(queue_file: Path) -> None:
    """A wrong call to each subcommand (subprocesses) exits 2, says why, changes nothing."""
    before = snapshot(queue_file)
    calls = [[*args, "--db", str(queue_file)] for args in BAD_CALLS] + [["queue"]]
    for done in run_many(calls):
        assert done.returncode == 2, done
        assert done.stderr.strip(), done
        assert "Traceback" not in done.stderr
    assert snapshot(queue_file) == before


@pytest.mark.parametrize("args", MORE_BAD_CALLS, ids=" ".join)
def test_more_bad_arguments_exit_2(
    queue_file: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """More wrong calls, through main() in process: exit 2, a message, nothing changed."""
    before = snapshot(queue_file)
    assert main([*args, "--db", str(queue_file)]) == 2
    assert capsys.readouterr().err.strip()
    assert snapshot(queue_file) == before


def test_purge_without_a_terminal_needs_yes(aicm: Run, queue_file: Path) -> None:
    """purge with no terminal and no --yes refuses (exit 2); with --yes the dead rows go."""
    before = snapshot(queue_file)
    refused = aicm("queue", "purge", "--db", str(queue_file))
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert snapshot(queue_file) == before
    done = aicm("queue", "purge", "--db", str(queue_file), "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted 2" in done.stdout
    assert states(queue_file) == {"pending": PENDING}
    everything = aicm("queue", "purge", "--db", str(queue_file), "--state", "all", "-y")
    assert everything.returncode == 0
    assert states(queue_file) == {}


@pytest.mark.parametrize(
    ("answer", "code", "left"),
    [("y\n", 0, {"pending": PENDING}), ("\n", 1, {"pending": PENDING, "dead": 2})],
)
def test_purge_on_a_terminal_asks_first(
    queue_file: Path, answer: str, code: int, left: dict[str, int]
) -> None:
    """On a terminal purge asks; 'y' deletes, anything else keeps the rows (exit 1)."""
    code_seen, output = run_in_pty(["queue", "purge", "--db", str(queue_file)], answer)
    assert "Delete 2 dead-lettered record(s)" in output
    assert code_seen == code
    assert states(queue_file) == left


def test_purge_never_touches_a_live_lease(aicm: Run, queue_file: Path) -> None:
    """A pending row leased by a live owner survives purge --state pending."""
    with sqlite3.connect(queue_file) as conn:
        conn.execute(
            "UPDATE records SET lease_owner = 'someone', next_attempt_at = ?"
            " WHERE response_id = 'pending-0'",
            (time.time() + 60,),
        )
    conn.close()
    done = aicm("queue", "purge", "--db", str(queue_file), "--state", "pending", "--yes")
    assert done.returncode == 0
    assert "deleted 4" in done.stdout
    assert "kept 1" in done.stdout
    with sqlite3.connect(queue_file) as conn:
        remaining = conn.execute("SELECT response_id, state FROM records ORDER BY id").fetchall()
    conn.close()
    assert remaining == [("dead-1", 1), ("dead-2", 1), ("pending-0", 0)]


def test_admin_is_safe_while_a_tracker_sends_from_the_file(
    tmp_path: Path, collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a tracker's rows are in flight, purge keeps them and the tracker delivers all."""
    path = tmp_path / "live.db"
    collector.set_faults(Faults(latency=1.5))
    with Tracker(
        delivery_type="persistent_queue",
        db_path=str(path),
        aicm_api_key=API_KEY,
        aicm_api_base=collector.api_base,
        # The three rows go as one batch once all are in (a short window could send the
        # first alone, and the others would wait behind its slow answer).
        max_batch_size=3,
        batch_interval=60,
    ) as tracker:
        for i in range(3):
            tracker.track("openai", "gpt-5-mini", {"input_tokens": i}, response_id=f"live-{i}")
        deadline = time.monotonic() + 5
        while leased(path) != 3:
            assert time.monotonic() < deadline, "the rows were never leased"
            time.sleep(0.02)
        # The command runs in this process: on a loaded machine a new interpreter can take
        # longer to start than the answer takes to come, and purge must run before it.
        assert main(["queue", "purge", "--db", str(path), "--state", "all", "--yes"]) == 0
        assert "kept 3" in capsys.readouterr().out
        assert tracker.flush(10) == 0
    assert sorted(r["response_id"] for r in collector.records("track")) == [
        "live-0",
        "live-1",
        "live-2",
    ]


def test_drain_delivers_through_failures_and_reports(
    aicm: Run, queue_file: Path, collector: LocalCollector
) -> None:
    """drain rides out the collector's first failures and delivers every pending row once."""
    collector.set_faults(Faults(fail_first=2))
    env = aicm_env(AICM_API_KEY=API_KEY, AICM_BACKOFF_BASE="0.05")
    done = aicm(
        "queue", "drain", "--db", str(queue_file), "--api-base", collector.api_base, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("delivered 5, left 0, 0 dead-lettered")
    assert sorted(r["response_id"] for r in collector.records("track")) == [
        f"pending-{i}" for i in range(PENDING)
    ]
    assert collector.stats()["faults"]["fail_first"] == 2
    assert states(queue_file) == {"dead": 2}


def test_drain_counts_dead_letters_and_exits_1(
    aicm: Run, queue_file: Path, collector: LocalCollector
) -> None:
    """Rows retried and refused again are dead-lettered; drain says so and exits 1."""
    assert aicm("queue", "retry", "--db", str(queue_file), "--all").returncode == 0
    collector.set_faults(Faults(reject_response_ids=frozenset(DEAD_IDS)))
    env = aicm_env(AICM_API_KEY=API_KEY)
    done = aicm(
        "queue", "drain", "--db", str(queue_file), "--api-base", collector.api_base, env=env
    )
    assert done.returncode == 1
    assert done.stdout.startswith("delivered 5, left 0, 2 dead-lettered")
    assert states(queue_file) == {"dead": 2}


def test_drain_gives_up_at_its_timeout(
    queue_file: Path,
    collector: LocalCollector,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against a collector that always fails, drain stops at --timeout and keeps the rows."""
    collector.set_faults(Faults(failure_rate=1.0))
    monkeypatch.setenv("AICM_API_KEY", API_KEY)
    monkeypatch.setenv("AICM_BACKOFF_BASE", "0.05")
    monkeypatch.setenv("AICM_BACKOFF_CAP", "0.1")
    # In this process, so that what is timed is the drain, not an interpreter's start (which
    # took 15 s on a loaded machine).
    started = time.monotonic()
    argv = ["queue", "drain", "--db", str(queue_file), "--api-base", collector.api_base]
    code = main([*argv, "--timeout", "1"])
    assert time.monotonic() - started < 10
    done = capsys.readouterr()
    assert code == 1
    assert "left 5" in done.out
    assert "not delivered within 1 s" in done.err
    assert states(queue_file) == {"pending": PENDING, "dead": 2}


def test_drain_needs_the_key_and_says_whose_rows_it_leaves(
    aicm: Run, queue_file: Path, collector: LocalCollector
) -> None:
    """No AICM_API_KEY: exit 1, one line; another key: nothing sent, the rows are named."""
    no_key = aicm("queue", "drain", "--db", str(queue_file), "--api-base", collector.api_base)
    assert no_key.returncode == 1
    assert "AICM_API_KEY" in no_key.stderr
    other = aicm(
        "queue",
        "drain",
        "--db",
        str(queue_file),
        "--api-base",
        collector.api_base,
        env=aicm_env(AICM_API_KEY="another-key"),
    )
    assert other.returncode == 1
    assert "another API root or key" in other.stdout
    assert collector.count("track") == 0
    assert states(queue_file) == {"pending": PENDING, "dead": 2}


def test_drain_on_a_terminal_shows_progress(queue_file: Path, collector: LocalCollector) -> None:
    """On a terminal drain shows a progress bar counting the rows (N/5), gone once done,
    then prints its summary."""
    args = ["queue", "drain", "--db", str(queue_file), "--api-base", collector.api_base]
    code, output = run_in_pty(args, env={"AICM_API_KEY": API_KEY})
    assert code == 0, output
    assert "draining queue.db" in output
    assert re.search(r"[0-5]/5", output)
    assert "\x1b[2K" in output  # the bar's line is erased before the summary
    assert "delivered 5, left 0" in output
    assert collector.count("track") == PENDING


def test_watch_refreshes_count_times(aicm: Run, queue_file: Path) -> None:
    """watch --count 3 prints three refreshes (one line each off a terminal), then exits 0."""
    done = aicm("queue", "watch", "--db", str(queue_file), "--interval", "0.05", "--count", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert all("pending=5" in line and "dead=2" in line for line in lines)
    assert "(+0)" in lines[1]


def test_watch_on_a_terminal_redraws_in_colour(queue_file: Path) -> None:
    """On a terminal watch redraws its table in place, the changes in their own column;
    colour unless NO_COLOR is set."""
    args = ["queue", "watch", "--db", str(queue_file), "--interval", "0.05", "--count", "2"]
    code, output = run_in_pty(args)
    assert code == 0
    assert output.count("aicm queue watch: ") >= 2
    assert "\033[1A\033[2K" in output  # the second refresh goes back up over the first
    # pending, in yellow; its change (none) in the last column
    assert re.search(r"pending +\033\[33m +5\033\[0m +\+0\r\n", output)
    code, plain = run_in_pty(args, env={"NO_COLOR": "1"})
    assert code == 0
    assert "\033[33m" not in plain
    assert "\033[1A\033[2K" in plain


SUBCOMMANDS = [
    ["queue", "stats"],
    ["queue", "list"],
    ["queue", "retry", "--all"],
    ["queue", "purge", "--yes"],
    ["queue", "drain"],
    ["queue", "watch", "--count", "1"],
    ["queue", "export"],
    ["queue", "retarget", "--api-base", "http://127.0.0.1:9"],
]


def test_a_missing_file_is_one_line_exit_1_and_not_created(tmp_path: Path) -> None:
    """Every subcommand on a missing file: one line naming it, exit 1, nothing created."""
    path = tmp_path / "nowhere" / "queue.db"
    env = aicm_env(AICM_API_KEY=API_KEY)
    for done in run_many([[*args, "--db", str(path)] for args in SUBCOMMANDS], env=env):
        assert done.returncode == 1, done
        assert done.stderr.count("\n") == 1, done
        assert str(path) in done.stderr
    assert not path.parent.exists()


@pytest.mark.parametrize("content", ["garbage", "other-sqlite", "empty"])
def test_a_corrupt_file_is_one_line_exit_1_and_untouched(tmp_path: Path, content: str) -> None:
    """Random bytes, another SQLite file, an empty file: exit 1, bytes and mtime unchanged."""
    path = tmp_path / "queue.db"
    if content == "garbage":
        path.write_bytes(os.urandom(4096))
    elif content == "other-sqlite":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE track (seq INTEGER PRIMARY KEY)")
        conn.close()
    else:
        path.write_bytes(b"")
    before = snapshot(path)
    time.sleep(0.01)
    calls = SUBCOMMANDS if content == "garbage" else SUBCOMMANDS[2:5]  # + the writers
    env = aicm_env(AICM_API_KEY=API_KEY)
    for done in run_many([[*args, "--db", str(path)] for args in calls], env=env):
        assert done.returncode == 1, done
        assert done.stderr.count("\n") == 1, done
        assert str(path) in done.stderr
    assert snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.db"]
