"""The ``aicm`` command driven in a real terminal (tmux, 80x24): what it shows fits the
terminal, and the screens in docs/cli.md are that output."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicm.collector import LocalCollector

from .conftest import API_KEY, aicm_env, make_queue
from .screens import SCREENS, WIDTH, capture_all, documented, have_tmux, normal, set_limit

pytestmark = pytest.mark.skipif(
    not have_tmux(), reason="tmux is not installed: the terminal screens cannot be captured"
)


def test_screens_fit_80_columns_and_are_the_docs(tmp_path: Path, collector: LocalCollector) -> None:
    """Each screen, run in tmux at 80x24: no line wider than 80 (the command wrapped its
    tables itself), no control code left, and the same text as docs/cli.md (numbers, times
    and ids aside). A stale screen is rewritten with ``python -m tests.cli.screens``."""
    make_queue(tmp_path / "queue.db", collector)
    collector.clear()
    set_limit(collector.api_base, API_KEY)
    screens = capture_all(tmp_path, aicm_env(), collector.api_base, API_KEY)
    docs = documented()
    assert set(docs) == set(SCREENS)
    for name, text in screens.items():
        lines = text.splitlines()
        assert len(lines) > 1, (name, text)
        wide = [line for line in lines[1:] if len(line) > WIDTH]
        assert not wide, (name, wide)
        assert "\033" not in text
        assert "Traceback" not in text, text
        assert normal(text) == normal(docs[name]), (
            f"docs/cli.md's {name!r} screen differs from the command's output:\n{text}"
        )
