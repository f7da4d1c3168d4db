"""The public surface: what ``import aicm`` offers."""

from __future__ import annotations

import subprocess
import sys

import aicm


def test_all_is_sorted_and_complete() -> None:
    """``aicm.__all__`` is sorted, and every name in it exists."""
    assert aicm.__all__ == sorted(aicm.__all__)
    missing = [name for name in aicm.__all__ if not hasattr(aicm, name)]
    assert missing == []


def test_public_classes_are_not_private_modules_only() -> None:
    """Every public class and function is importable from ``aicm`` itself."""
    public = {
        name
        for name, value in vars(aicm).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("aicm.")
    }
    assert public <= set(aicm.__all__)


def test_every_error_is_an_aicm_error() -> None:
    """Each exception class aicm exports derives from ``AicmError``."""
    errors = [
        getattr(aicm, n)
        for n in aicm.__all__
        if isinstance(getattr(aicm, n), type) and issubclass(getattr(aicm, n), BaseException)
    ]
    assert errors
    assert all(issubclass(e, aicm.AicmError) for e in errors)


def test_py_typed_is_shipped() -> None:
    """The package ships the PEP 561 marker."""
    from importlib.resources import files

    assert files("aicm").joinpath("py.typed").is_file()


def test_import_starts_no_thread_and_needs_no_key() -> None:
    """Importing aicm starts no thread and reads no API key."""
    code = (
        "import threading, os; os.environ.pop('AICM_API_KEY', None); import aicm; "
        "print(threading.active_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
