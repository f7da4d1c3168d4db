"""The ``aicm`` command's conventions: help, exit codes, one-line errors, --debug, colour."""

from __future__ import annotations

import pytest

from aicm.cli import main

from .conftest import Run, aicm_env, run_many
from .pty_helper import run_in_pty

COMMANDS = [
    [],
    ["serve"],
    ["demo"],
    ["report"],
    ["queue"],
    ["queue", "stats"],
    ["queue", "list"],
    ["queue", "retry"],
    ["queue", "purge"],
    ["queue", "drain"],
    ["queue", "watch"],
    ["queue", "export"],
    ["queue", "retarget"],
    ["limits"],
    ["costs"],
    ["usage"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "aicm")
def test_every_command_has_help(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``aicm [COMMAND...] --help`` exits 0 and prints the command's usage and options."""
    assert main([*args, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: aicm {' '.join(args)}".rstrip())
    assert "--debug" in out


def test_python_dash_m_aicm_runs_the_command() -> None:
    """``python -m aicm --help`` works as a real subprocess and lists every command."""
    (done,) = run_many([["--help"]])
    assert done.returncode == 0
    for command in ("serve", "demo", "report", "queue"):
        assert command in done.stdout


def test_no_command_and_unknown_commands_are_usage_errors() -> None:
    """No command, an unknown one, or an unknown option: exit 2 with usage on stderr."""
    for done in run_many([[], ["frobnicate"], ["report", "--db", "x", "--colour"]]):
        assert done.returncode == 2, done
        assert "usage: aicm" in done.stderr


def test_errors_are_one_line_and_debug_shows_the_traceback(aicm: Run, tmp_path: object) -> None:
    """A failure is one stderr line, exit 1; --debug (before or after the name) adds a traceback."""
    missing = "/nonexistent/queue.db"
    plain, before, after = run_many(
        [
            ["queue", "stats", "--db", missing],
            ["--debug", "queue", "stats", "--db", missing],
            ["queue", "stats", "--debug", "--db", missing],
        ]
    )
    assert plain.returncode == 1
    assert plain.stderr == f"aicm queue stats: error: no queue file at {missing}\n"
    for done in (before, after):
        assert done.returncode == 1
        assert "Traceback" in done.stderr
        assert "QueueStoreError" in done.stderr


def test_version_and_main_return_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """main() returns exit codes instead of exiting, for --version and usage errors alike."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("aicm ")
    assert main(["queue", "list", "--limit", "zero"]) == 2
    assert "--limit" in capsys.readouterr().err
    assert main([]) == 2


def test_errors_are_red_only_on_a_terminal_without_no_color() -> None:
    """The error prefix is coloured on a terminal, plain with NO_COLOR or off a terminal."""
    args = ["queue", "stats", "--db", "/nonexistent/queue.db"]
    code, output = run_in_pty(args)
    assert code == 1
    assert "\033[31merror:\033[0m" in output
    code, output = run_in_pty(args, env={"NO_COLOR": "1"})
    assert code == 1
    assert "\033[" not in output
    (piped,) = run_many([args], env=aicm_env())
    assert "\033[" not in piped.stderr
