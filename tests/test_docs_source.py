"""The docs read the same on GitHub as on the site: no snippet markers, and every page that
shows a runnable file shows that file as it is (the tests run the file)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
# A page that shows a file marks the code block with the file's path just above it.
SHOWN = re.compile(
    r"^<!-- docs/(?P<name>\S+): this block is that file, which the tests run -->\n"
    r"```\w*\n(?P<code>.*?)\n```$",
    re.M | re.S,
)


def test_the_docs_have_pages() -> None:
    assert len(PAGES) > 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_no_snippet_markers(page: Path) -> None:
    """``--8<--`` includes render as raw text on GitHub: pages show the code itself."""
    assert "--8<--" not in page.read_text(encoding="utf-8")


def test_shown_files_match_the_files_the_tests_run() -> None:
    shown = [(page, m) for page in PAGES for m in SHOWN.finditer(page.read_text("utf-8"))]
    assert {m["name"] for _, m in shown} >= {"limits_example.py", "guides/script.py"}
    for page, m in shown:
        file = DOCS / m["name"]
        assert file.is_file(), f"{page} shows {m['name']}, which does not exist"
        assert m["code"] == file.read_text("utf-8").rstrip("\n"), (
            f"{page.relative_to(REPO)} shows an older copy of docs/{m['name']}: "
            "paste the file's current text into the block"
        )


SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|exc|mod|data|obj|const):`")


def test_docstrings_use_mkdocstrings_cross_references() -> None:
    """The API reference renders docstrings with mkdocstrings, where a Sphinx role such as
    ``:class:`X``` shows as raw text: link with ``[`X`][aicm.X]`` or write ``X`` as code."""
    sources = sorted((REPO / "aicm").rglob("*.py"))
    assert len(sources) > 50
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sources
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if SPHINX_ROLE.search(line)
    ]
    assert not found, f"Sphinx roles in docstrings: {found[:10]}"
