"""Rewrite the settings table in docs/settings.md from ``aicm._core.settings.OPTIONS``.

Run ``python scripts/settings_table.py`` after adding or changing an option; a test fails
while the page and the list differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aicm._core.settings import settings_table  # noqa: E402

PAGE = ROOT / "docs" / "settings.md"
HEADER = "| setting | environment variable |"


def main() -> None:
    lines = PAGE.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(HEADER))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[start:end] = [settings_table()]
    PAGE.write_text("".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
