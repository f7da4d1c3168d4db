"""``aicm serve``: run the local collector in the foreground (layer 6)."""

from __future__ import annotations

import argparse
from typing import Any

from ._console import CommandError, common_parent

HELP = "run the local collector (a reference server of the wire contract)"


def register(commands: Any, *, full: bool = True) -> None:
    """Add ``serve`` to the command's subparsers.

    With ``full=False`` (another command was asked for) the collector's options are left
    out, which spares every other command the collector's import.
    """
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        parents=[common_parent()],
        help=HELP,
        description="Run the local collector until Ctrl-C. Needs the 'collector' extra.",
    )
    if not full:
        return
    try:
        from aicm.collector import add_arguments
    except ImportError as exc:
        message = str(exc)
        parser.set_defaults(run=lambda args: _missing(message))
        return
    add_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from aicm.collector import run_from_args

    return run_from_args(args)


def _missing(message: str) -> int:
    raise CommandError(message)
