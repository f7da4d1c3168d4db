"""Rewrite what is generated from ``aicm._core.settings.OPTIONS``: the ``Settings`` fields,
the option lines of ``DeliveryOptions`` and ``TrackerOptions`` and the table in
docs/settings.md.

Run ``python scripts/options.py`` after adding or changing an option; a test fails while any
generated region differs from what this writes. Each region sits between a
``BEGIN generated from OPTIONS`` line and an ``END generated`` line; everything else in those
files is left as it is.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aicm._core.settings import OPTIONS, Option  # noqa: E402

BEGIN = "BEGIN generated from OPTIONS by scripts/options.py: do not edit"
END = "END generated"

#: The files with generated regions, relative to the repository root.
SETTINGS = Path("aicm/_core/settings.py")
TYPED_OPTIONS = Path("aicm/_api/options.py")
DOCS = Path("docs/settings.md")


def _default_source(value: object) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


def settings_fields(options: Iterable[Option] = OPTIONS) -> str:
    """The ``Settings`` attrs fields, one per option, as Python source."""
    lines = []
    for o in options:
        default = _default_source(o.default)
        if o.secret:
            field = f"default={default}, repr=False" if o.field_default else "repr=False"
            lines.append(f"    {o.name}: {o.type_hint} = attrs.field({field})\n")
        elif o.field_default:
            lines.append(f"    {o.name}: {o.type_hint} = {default}\n")
        else:
            lines.append(f"    {o.name}: {o.type_hint}\n")
    return "".join(lines)


def _argument_hint(o: Option) -> str:
    base = o.argument_hint or o.type_hint.removesuffix(" | None")
    return f"{base} | None"


def _typed_lines(options: Iterable[Option], *, tracker_only: bool) -> str:
    return "".join(
        f"    {o.argument}: {_argument_hint(o)}\n"
        for o in options
        if o.argument is not None and o.tracker_only is tracker_only
    )


def delivery_options(options: Iterable[Option] = OPTIONS) -> str:
    """The ``DeliveryOptions`` lines: every option every class takes as a keyword."""
    return _typed_lines(options, tracker_only=False)


def tracker_options(options: Iterable[Option] = OPTIONS) -> str:
    """The ``TrackerOptions`` lines: the options only the trackers take as a keyword."""
    return _typed_lines(options, tracker_only=True)


def docs_table(options: Iterable[Option] = OPTIONS) -> str:
    """The Markdown table of every setting, as docs/settings.md shows it."""
    rows = [
        "| setting | environment variable | INI key | default | accepts |",
        "|---|---|---|---|---|",
    ]
    for o in options:
        ini = f"`{o.name}`" if o.ini else "— (never read from a file)"
        rows.append(f"| `{o.name}` | `{o.env}` | {ini} | {o.shown_default} | {o.accepts} |")
    return "\n".join(rows) + "\n"


#: Each file's generated regions, in the order they appear in it.
REGIONS: dict[Path, Sequence[Callable[[Iterable[Option]], str]]] = {
    SETTINGS: [settings_fields],
    TYPED_OPTIONS: [delivery_options, tracker_options],
    DOCS: [docs_table],
}


def regions(text: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` line indexes of each generated region's body in ``text``."""
    found = []
    start = None
    for i, line in enumerate(text.splitlines(keepends=True)):
        if BEGIN in line:
            start = i + 1
        elif END in line and start is not None:
            found.append((start, i))
            start = None
    return found


def region_bodies(text: str) -> list[str]:
    """The text of each generated region in ``text``."""
    lines = text.splitlines(keepends=True)
    return ["".join(lines[a:b]) for a, b in regions(text)]


def rewrite(text: str, bodies: Sequence[str]) -> str:
    """``text`` with its generated regions replaced by ``bodies``, in order."""
    spans = regions(text)
    if len(spans) != len(bodies):
        raise ValueError(f"expected {len(bodies)} generated region(s), found {len(spans)}")
    lines = text.splitlines(keepends=True)
    for (a, b), body in reversed(list(zip(spans, bodies, strict=True))):
        lines[a:b] = [body]
    return "".join(lines)


def generate(root: Path = ROOT, options: Sequence[Option] = OPTIONS) -> list[Path]:
    """Rewrite every generated region under ``root`` from ``options``; the files changed."""
    changed = []
    for relative, makers in REGIONS.items():
        path = root / relative
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, [make(options) for make in makers])
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def main() -> None:
    for path in generate():
        print(f"rewrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
