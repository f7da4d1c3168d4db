"""``aicm queue export`` (JSON lines of the rows) and ``aicm queue retarget`` (rows queued
for one service sent to another), on real queue files and real collectors."""

from __future__ import annotations

import json
from pathlib import Path

from aicm import Tracker
from aicm._core.settings import key_fingerprint
from aicm._io.sqlite import SyncWriter
from aicm.collector import LocalCollector

from .conftest import API_KEY, DEAD_IDS, PENDING, aicm_env, run_many, states

OTHER_KEY = "another-key-0123456789"


def test_export_prints_every_row_as_a_json_line(queue_file: Path) -> None:
    """export: one JSON object per row, oldest first, with the record; --state filters."""
    everything, dead = run_many(
        [
            ["queue", "export", "--db", str(queue_file)],
            ["queue", "export", "--db", str(queue_file), "--state", "dead", "--json"],
        ]
    )
    assert everything.returncode == 0, everything.stderr
    rows = [json.loads(line) for line in everything.stdout.splitlines()]
    assert [r["response_id"] for r in rows] == [*DEAD_IDS, *(f"pending-{i}" for i in range(5))]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert rows[2]["record"]["payload"] == {"input_tokens": 100, "output_tokens": 10}
    assert {r["state"] for r in rows[2:]} == {"pending"}
    assert [json.loads(line)["response_id"] for line in dead.stdout.splitlines()] == [*DEAD_IDS]
    assert API_KEY not in everything.stdout
    assert states(queue_file) == {"pending": PENDING, "dead": 2}  # read-only


def test_retarget_sends_the_rows_to_another_service_with_the_key_from_env(
    queue_file: Path, collector: LocalCollector
) -> None:
    """retarget --key-from-env: every row now belongs to the other service and key, so
    drain with that key delivers the pending ones there (and none to the first); the dead
    ones stay dead, moved too."""
    with LocalCollector() as other:
        env = aicm_env(AICM_API_KEY=OTHER_KEY)
        moved, = run_many(
            [["queue", "retarget", "--db", str(queue_file), "--api-base", other.api_base,
              "--key-from-env", "--json"]],
            env,
        )  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        result = json.loads(moved.stdout)
        assert result["moved"] == PENDING + 2
        assert result["api_root"] == f"{other.api_base}/api/v1"
        assert OTHER_KEY not in moved.stdout + moved.stderr
        (old_key,) = run_many(
            [["queue", "drain", "--db", str(queue_file), "--api-base", other.api_base]],
            aicm_env(AICM_API_KEY=API_KEY),
        )
        assert old_key.returncode == 1  # the rows now carry the other key's fingerprint
        assert other.count("track") == 0
        (drained,) = run_many(
            [["queue", "drain", "--db", str(queue_file), "--api-base", other.api_base]], env
        )
        assert drained.returncode == 0, drained.stderr
        assert drained.stdout.startswith(f"delivered {PENDING}, left 0")
        got = sorted(r["response_id"] for r in other.records("track"))
        assert got == [f"pending-{i}" for i in range(PENDING)]
    assert collector.count("track") == 0
    assert states(queue_file) == {"dead": 2}
    (stats,) = run_many([["queue", "stats", "--db", str(queue_file), "--json"]])
    assert json.loads(stats.stdout)["api_roots"] == {result["api_root"]: 2}


def test_retarget_reaches_rows_never_tried_below_the_new_roots_claim_mark(
    tmp_path: Path, collector: LocalCollector
) -> None:
    """Rows never tried, queued for a service that is gone, moved to one whose tracker has
    already claimed newer rows of the file: drain still finds and delivers them (they are
    made due, as tried rows, not left under the new root's mark of claimed ids)."""
    path = tmp_path / "queue.db"
    gone = "http://127.0.0.1:9/api/v1"
    writer = SyncWriter(path, api_root=gone, key_fp=key_fingerprint(API_KEY))
    for rid in ("old-1", "old-2"):
        record = {"service_key": "openai::gpt-5-mini", "response_id": rid}
        record |= {"timestamp": "2025-06-01T00:00:00Z", "payload": {"input_tokens": 3}}
        writer.add("/track", rid, json.dumps(record))
    writer.close()
    options = {"delivery_type": "persistent_queue", "db_path": str(path)}
    with Tracker(**options, aicm_api_key=API_KEY, aicm_api_base=collector.api_base) as tracker:
        tracker.track("openai", "gpt-5-mini", {"input_tokens": 1}, response_id="new-1")
        assert tracker.flush(10) == 0
    env = aicm_env(AICM_API_KEY=API_KEY)
    elsewhere, moved = run_many(
        [
            ["queue", "retarget", "--db", str(path), "--api-base", collector.api_base,
             "--from-api-base", "http://127.0.0.1:1"],
            ["queue", "retarget", "--db", str(path), "--api-base", collector.api_base],
        ],
        env,
    )  # fmt: skip
    assert elsewhere.stdout.startswith("0 record(s) now queued for")  # no row of that root
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith(f"2 record(s) now queued for {collector.api_base}/api/v1")
    (drained,) = run_many(
        [
            [
                "queue",
                "drain",
                "--db",
                str(path),
                "--api-base",
                collector.api_base,
                "--timeout",
                "20",
            ]
        ],
        env,
    )
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert drained.stdout.startswith("delivered 2, left 0")
    assert sorted(r["response_id"] for r in collector.records("track")) == [
        "new-1",
        "old-1",
        "old-2",
    ]


def test_retarget_needs_a_target(queue_file: Path) -> None:
    """Without --api-base: exit 2, one line; --key-from-env without the key: exit 1."""
    no_target, no_key = run_many(
        [
            ["queue", "retarget", "--db", str(queue_file)],
            ["queue", "retarget", "--db", str(queue_file), "--api-base", "http://127.0.0.1:9",
             "--key-from-env"],
        ]
    )  # fmt: skip
    assert no_target.returncode == 2
    assert no_target.stderr.count("\n") == 1
    assert "--api-base" in no_target.stderr
    assert no_key.returncode == 1
    assert "AICM_API_KEY" in no_key.stderr
    assert states(queue_file) == {"pending": PENDING, "dead": 2}
