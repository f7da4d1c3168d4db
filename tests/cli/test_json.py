"""``--json`` on every command: plain JSON on stdout (no colour, no progress), stable keys."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from aicm.cli import _parser
from aicm.collector import LocalCollector

from .conftest import API_KEY, PENDING, aicm_env, run_many

SUMMARY_KEYS = {
    "path",
    "pending",
    "leased",
    "dead",
    "oldest_pending_age",
    "oldest_dead_age",
    "size_bytes",
    "api_roots",
}


def _leaves(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> list[Any]:
    """Every runnable command: (its words, its parser)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _leaves(sub, (*words, name))
    return found or [(words, parser)]


def test_every_command_takes_json() -> None:
    """Each command and subcommand has --json (serve's is in tests/cli/test_serve_store.py,
    demo's and report's in their own tests)."""
    leaves = _leaves(_parser(["serve"]))
    assert len(leaves) >= 17
    for words, parser in leaves:
        options = {o for action in parser._actions for o in action.option_strings}
        assert "--json" in options, words


def _copy(queue_file: Path, name: str) -> str:
    path = queue_file.parent / name
    shutil.copyfile(queue_file, path)
    return str(path)


def test_json_output_of_the_queue_limits_costs_and_usage_commands(
    queue_file: Path, collector: LocalCollector
) -> None:
    """Each command's --json parses, has the documented keys and holds no control code."""
    base = collector.api_base
    env = aicm_env(AICM_API_KEY=API_KEY, AICM_API_BASE=base)
    q = str(queue_file)
    calls = {
        "stats": ["queue", "stats", "--db", q],
        "list": ["queue", "list", "--db", q, "--limit", "3"],
        "retry": ["queue", "retry", "--db", _copy(queue_file, "retry.db"), "--all"],
        "purge": ["queue", "purge", "--db", _copy(queue_file, "purge.db"), "--yes"],
        "drain": ["queue", "drain", "--db", _copy(queue_file, "drain.db")],
        "watch": ["queue", "watch", "--db", q, "--count", "2", "--interval", "0.05"],
        "limits set": ["limits", "set", "--amount", "2", "--period", "day"],
        "costs": ["costs", "--by", "service"],
        "usage": ["usage"],
    }
    results = dict(zip(calls, run_many([[*c, "--json"] for c in calls.values()], env), strict=True))
    for name, done in results.items():
        assert done.returncode == 0, (name, done.stderr)
        assert "\033" not in done.stdout + done.stderr, name
    out = {name: done.stdout for name, done in results.items()}
    assert set(json.loads(out["stats"])) == SUMMARY_KEYS
    assert len(json.loads(out["list"])) == 3
    assert json.loads(out["retry"])["retried"] == 2
    assert json.loads(out["retry"])["not_dead"] == []
    purged = json.loads(out["purge"])
    assert purged == {"path": calls["purge"][3], "state": "dead", "deleted": 2, "kept_leased": 0}
    drained = json.loads(out["drain"])
    assert drained["delivered"] == PENDING
    assert drained["left"] == 0
    assert drained["dead_lettered"] == 0
    lines = [json.loads(line) for line in out["watch"].splitlines()]
    assert len(lines) == 2
    assert set(lines[0]) == SUMMARY_KEYS | {"at", "change"}
    assert lines[0]["change"]["pending"] is None
    assert lines[1]["change"] == {"pending": 0, "leased": 0, "dead": 0, "size_bytes": 0}
    limit = json.loads(out["limits set"])
    assert limit["amount"] == 2
    assert json.loads(out["costs"])["by"] == ["service"]
    # The rows drain delivered (the calls run at once: usage may see fewer, never others).
    assert {e["response_id"] for e in json.loads(out["usage"])} <= {
        f"pending-{i}" for i in range(PENDING)
    }
    listed, progress = run_many(
        [["limits", "list", "--json"], ["limits", "progress", "--json"]], env
    )
    assert [x["uuid"] for x in json.loads(listed.stdout)] == [limit["uuid"]]
    assert [x["uuid"] for x in json.loads(progress.stdout)] == [limit["uuid"]]
    (removed,) = run_many([["limits", "remove", limit["uuid"], "--json"]], env)
    assert json.loads(removed.stdout) == {"removed": limit["uuid"]}
