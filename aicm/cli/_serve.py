"""``aicm serve``: run the local collector in the foreground (layer 6)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add ``serve`` to the command's subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="run the local collector (a reference server of the wire contract)",
        description="Run the local collector until Ctrl-C. Needs the 'collector' extra.",
    )
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
    raise RuntimeError(message)
