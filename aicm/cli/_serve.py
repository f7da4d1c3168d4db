"""``aicm serve``: run the local collector in the foreground (layer 6).

Its records are kept in a file that lasts (`default_collector_db()`), so the collector
stopped and started again still holds, and ``aicm report`` still finds, what it received.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
from pathlib import Path
from typing import Any

from ._common import CommandError, add_command

__all__ = ["DB_ENV", "default_collector_db", "register"]

HELP = "run the local collector (a reference server of the wire contract)"

DB_ENV = "AICM_COLLECTOR_DB"
"""The environment variable naming the database of ``aicm serve`` and ``aicm report``."""


def default_collector_db() -> Path:
    """Where ``aicm serve`` keeps its records and ``aicm report`` reads them:
    ``$AICM_COLLECTOR_DB``, else ``records.sqlite3`` in the user data directory
    (``~/.local/share/aicm/collector`` on Linux, ``~/Library/Application
    Support/aicm/collector`` on macOS)."""
    chosen = os.environ.get(DB_ENV)
    if chosen:
        return Path(chosen).expanduser()
    import platformdirs

    return platformdirs.user_data_path("aicm", appauthor=False) / "collector" / "records.sqlite3"


def register(commands: Any, *, full: bool = True) -> None:
    """Add ``serve`` to the command's subparsers.

    With ``full=False`` (another command was asked for) the collector's options are left
    out, which spares every other command the collector's import.
    """
    parser = add_command(
        commands,
        "serve",
        HELP,
        "Run the local collector until Ctrl-C. Needs the 'collector' extra.",
        json="print where it listens and keeps its data as one line of JSON",
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
    for action in parser._actions:  # the collector's own default is a temporary file
        if action.dest == "db":
            action.help = (
                f"SQLite file of the records, kept across restarts (default: ${DB_ENV}, "
                "else records.sqlite3 in the user data directory; aicm report reads it)"
            )
    parser.set_defaults(run=_run)


def _check_port(host: str, port: int) -> None:
    """A one-line error when ``host:port`` is taken, before the collector starts."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CommandError(f"--host {host}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"port {port} on {host} is already in use: stop what listens there, or "
                    "choose another with --port (--port 0 picks a free one)"
                ) from exc
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def _run(args: argparse.Namespace) -> int:
    from aicm.collector import run_from_args

    _check_port(args.host, args.port)
    if args.db is None:
        db = default_collector_db()
        db.parent.mkdir(parents=True, exist_ok=True)
        args.db = str(db)
    return run_from_args(args)


def _missing(message: str) -> int:
    raise CommandError(message)
