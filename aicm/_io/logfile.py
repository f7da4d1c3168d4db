"""Attach a log handler to the ``aicm`` logger when a user asks for one (layer 2)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

__all__ = ["configure_logging"]

_lock = threading.Lock()
_files: dict[str, logging.Handler] = {}


def configure_logging(*, log_file: str | None, log_level: str | None) -> None:
    """Set the ``aicm`` logger's level and, once per file, add a file handler.

    Nothing is attached unless asked: by default the library only has a NullHandler.
    """
    root = logging.getLogger("aicm")
    with _lock:
        if log_level is not None:
            root.setLevel(log_level)
        if log_file is None:
            return
        key = str(Path(log_file).expanduser().resolve())
        if key in _files:
            return
        handler = logging.FileHandler(key, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        _files[key] = handler
