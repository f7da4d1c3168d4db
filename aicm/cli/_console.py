"""What every ``aicm`` subcommand shares: exit codes, errors, colour and tables (layer 6)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "Style",
    "UsageError",
    "common_parent",
    "format_age",
    "format_bytes",
    "format_number",
    "render_table",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""

    exit_code = EXIT_FAILURE


class UsageError(CommandError):
    """The command was called wrongly: printed as one line, exit status 2."""

    exit_code = EXIT_USAGE


def common_parent() -> argparse.ArgumentParser:
    """A parent parser giving every subcommand ``--debug`` (so it works after the name too)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show a traceback when something fails",
    )
    return parent


class Style:
    """ANSI colour for one stream: only on a terminal, never when ``NO_COLOR`` is set."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.enabled = (
            self.tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        )

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        """Bold text."""
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        """Faint text."""
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        """Red text (errors, dead letters)."""
        return self._wrap("31", text)

    def green(self, text: str) -> str:
        """Green text (all well)."""
        return self._wrap("32", text)

    def yellow(self, text: str) -> str:
        """Yellow text (waiting, warnings)."""
        return self._wrap("33", text)


def stdout_style() -> Style:
    """The style of standard output."""
    return Style(sys.stdout)


def format_number(value: float) -> str:
    """``1234567`` -> ``1,234,567``; a fraction keeps up to 6 significant decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.2f}"


def format_bytes(size: int) -> str:
    """A size in B, KiB, MiB or GiB."""
    amount = float(size)
    for unit in ("B", "KiB", "MiB"):
        if amount < 1024:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"


def format_age(seconds: float | None) -> str:
    """A duration as ``42s``, ``3m05s``, ``2h10m`` or ``4d03h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    right: Sequence[bool] | None = None,
    footer: Sequence[Any] | None = None,
    style: Style | None = None,
) -> str:
    """A plain-text table: a header, a rule, the rows, and an optional footer after a rule."""
    text_rows = [[str(c) for c in row] for row in rows]
    text_footer = [str(c) for c in footer] if footer is not None else None
    every = [list(headers), *text_rows, *([text_footer] if text_footer else [])]
    widths = [max(len(r[i]) for r in every) for i in range(len(headers))]
    align = list(right) if right is not None else [False] * len(headers)

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if a else c.ljust(w) for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    head = line(list(headers))
    out = [style.bold(head) if style else head, rule]
    out += [line(r) for r in text_rows]
    if text_footer is not None:
        out += [rule, style.bold(line(text_footer)) if style else line(text_footer)]
    return "\n".join(out)
