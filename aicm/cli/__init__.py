"""The ``aicm`` command (layer 6): serve, demo, report, queue, limits, costs, usage; python -m aicm.

Conventions every subcommand keeps: ``--help``; exit status 0 when all went well, 1 when
something failed, 2 when the command was called wrongly; an error is one line on stderr
(a traceback only with ``--debug``); colour only on a terminal, and never with
``NO_COLOR``; ``--json`` on every command. Output is drawn by ``rich`` (the ``cli`` extra);
the options are parsed by argparse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._core.exceptions import AicmError
from .._version import __version__
from ._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CommandError

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "main"]


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aicm",
        description="Record AI and REST API usage and deliver it to AICostManager.",
        epilog="Run 'aicm COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"aicm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import _costs, _demo, _limits, _queue, _report, _serve

    words = sys.argv[1:] if argv is None else argv
    _serve.register(commands, full="serve" in words)
    _demo.register(commands)
    _report.register(commands)
    _queue.register(commands)
    _limits.register(commands)
    _costs.register(commands)
    return parser


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return EXIT_OK
    return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aicm`` command; returns the exit code (0 ok, 1 failure, 2 usage)."""
    try:
        parser = _parser(argv)
    except ModuleNotFoundError as exc:
        if exc.name != "rich":
            raise
        print(
            "aicm: the command needs the 'cli' extra: pip install 'aicm-sdk[cli]'", file=sys.stderr
        )
        return EXIT_FAILURE
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's usage error (2)
        return _exit_code(exc)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    name = getattr(args, "command_name", args.command)
    from ._output import error

    try:
        code: int = args.run(args)
        return code
    except KeyboardInterrupt:
        print(f"aicm {name}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, CommandError):
            status = exc.exit_code
            message = str(exc)
        elif isinstance(exc, AicmError):
            status, message = EXIT_FAILURE, str(exc)
        else:
            status = EXIT_FAILURE
            message = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
        error(name, message)
        return status
