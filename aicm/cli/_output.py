"""How every ``aicm`` command writes: tables, lines, JSON, progress and errors, on ``rich``.

Data goes to standard output, progress and errors to standard error. On a terminal,
tables fit its width (cells wrap, nothing is cut) and progress bars count along; anywhere
else (a pipe, a file, a CI log) there are no control codes, no colour and no progress, and a
table row stays on one line, so the output can be grepped. Colour also stops with
``NO_COLOR`` or ``TERM=dumb``. ``--json`` output is plain JSON, written straight to the
stream: no colour, no wrapping, the same keys every time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

__all__ = [
    "Cell",
    "ProgressBar",
    "console",
    "error",
    "live",
    "print_json",
    "print_json_line",
    "progress",
    "say",
    "show",
    "table",
]

T = TypeVar("T")

Cell = str | Text | tuple[str, str]
"""A table cell or a piece of a line: text, or ``(text, style)`` such as ``("5", "yellow")``."""

# One row per line off a terminal, however wide the table: a pipe has no width to fit.
_PLAIN_WIDTH = 100_000

_FOLD_AT = 18

_PLAIN_BOX = box.Box("    \n    \n -- \n    \n    \n -- \n    \n    \n", ascii=True)


def console(stream: TextIO | None = None) -> Console:
    """A console on ``stream`` (default standard output): a terminal's width and colours on
    a terminal; plain text, one line per row, elsewhere (``FORCE_COLOR`` is not obeyed: a
    log must not fill with control codes)."""
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    tty = bool(isatty and isatty())
    return Console(
        file=stream,
        force_terminal=tty,
        width=None if tty else _PLAIN_WIDTH,
        markup=False,
        highlight=False,
        emoji=False,
    )


def _text(cell: Cell) -> Text:
    if isinstance(cell, Text):
        return cell
    if isinstance(cell, tuple):
        return Text(cell[0], style=cell[1])
    return Text(cell)


def say(*parts: Cell, stream: TextIO | None = None) -> None:
    """Print one line made of ``parts``: wrapped between words on a terminal, never elsewhere."""
    console(stream).print(Text.assemble(*(_text(p) for p in parts)))


def error(command: str, message: str) -> None:
    """``aicm COMMAND: error: MESSAGE`` as one line on standard error, ``error:`` in red."""
    line = " ".join(message.split())  # one line, whatever the message holds
    say(f"aicm {command}: ", ("error:", "red"), f" {line}", stream=sys.stderr)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on standard output."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def print_json_line(data: Any) -> None:
    """``data`` as one line of JSON on standard output, flushed (JSON lines)."""
    sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    right: Sequence[bool] = (),
    footer: Sequence[Cell] | None = None,
    title: str | None = None,
) -> Table:
    """A table: a bold header over a rule, the rows, an optional footer after a rule.

    ``right`` says which columns align right (numbers). Cells that do not fit a terminal's
    width wrap (a long word folds); nothing is cut. ``plain`` draws the rules in ASCII.
    """
    grid = Table(
        box=box.SIMPLE,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        show_footer=footer is not None,
        header_style="bold",
        footer_style="bold",
        title=title,
        title_justify="left",
        title_style="bold",
    )
    aligned = list(right) + [False] * (len(headers) - len(right))
    cells = [[_text(c) for c in row] for row in rows]
    for i, (name, is_right) in enumerate(zip(headers, aligned, strict=True)):
        words = [w for cell in [Text(name)] + [r[i] for r in cells] for w in cell.plain.split()]
        grid.add_column(
            name,
            justify="right" if is_right else "left",
            overflow="fold",
            # Short words and numbers stay whole; a long one (an id, a path) folds.
            min_width=min(max(map(len, words), default=1), _FOLD_AT),
            footer=_text(footer[i]) if footer is not None else "",
        )
    for row in cells:
        grid.add_row(*row)
    return grid


def show(*renderables: RenderableType) -> None:
    """Print tables (or any rich renderables) on standard output, a blank line between."""
    out = console()
    for i, item in enumerate(renderables):
        if i:
            out.print()
        if isinstance(item, Table):
            _fit(item, out)
        out.print(item)


def _fit(grid: Table, out: Console) -> None:
    if not out.is_terminal:
        grid.box = _PLAIN_BOX
        return
    # Too narrow to keep every short word whole: let every column fold instead of cutting.
    gaps = 2 * (len(grid.columns) - 1)
    if sum(c.min_width or 0 for c in grid.columns) + gaps > out.width:
        for column in grid.columns:
            column.min_width = None


class ProgressBar:
    """One task of a progress display; every method does nothing off a terminal."""

    def __init__(self, progress: Progress | None = None, task: TaskID | None = None) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1) -> None:
        """Count ``amount`` more done."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        """Set how much is done, the total, or the words beside the bar."""
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task, completed=completed, total=total, description=description
            )

    def track(self, items: Iterable[T], step: int = 1000) -> Iterator[T]:
        """Yield ``items``, counting them done ``step`` at a time (and the rest at the end)."""
        count = 0
        for item in items:
            yield item
            count += 1
            if count == step:
                self.advance(count)
                count = 0
        self.advance(count)


@contextmanager
def progress(description: str, total: float | None = None) -> Iterator[ProgressBar]:
    """A progress bar on standard error while the block runs, gone when it ends; nothing
    at all when standard error is not a terminal."""
    err = console(sys.stderr)
    if not err.is_terminal:
        yield ProgressBar()
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        yield ProgressBar(bar, bar.add_task(description, total=total))


@contextmanager
def live() -> Iterator[Live | None]:
    """A display on standard output that redraws in place (``update(renderable)``); None
    when standard output is not a terminal (print lines instead)."""
    out = console()
    if not out.is_terminal:
        yield None
        return
    with Live(console=out, auto_refresh=False, redirect_stdout=False) as display:
        yield display
