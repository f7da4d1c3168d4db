"""What a forked child must redo, also for forks that skip Python's own hooks (layer 1).

``os.register_at_fork`` hooks run only when Python itself forks (``os.fork``,
``multiprocessing``). A fork made by C code (uWSGI without ``py-call-osafterfork``, a
``ctypes`` call of libc's ``fork()``) skips them: the child would go on with the parent's
response-id prefix, worker thread and queues. Every hook aicm needs in a child is
registered here instead, and `check()` (called on the track path) notices such a
fork and runs them.

Noticing costs one byte read, not a ``getpid()`` system call: on Linux the byte lives in
a page the kernel zeroes in every child (``MADV_WIPEONFORK``, Linux 4.14+), whoever
forks. Elsewhere the pid is compared.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable

__all__ = ["after_fork_in_child", "check", "forked"]

_MADV_WIPEONFORK = 18  # <linux/mman.h>; the mmap module does not name it

_hooks: list[Callable[[], None]] = []
_pid = os.getpid()


def _wiped_on_fork() -> mmap.mmap | None:
    """A private page the kernel zeroes in forked children, its first byte set; or None."""
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    if not hasattr(mmap.mmap, "madvise") or not flags:
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, flags=flags)
    except (OSError, ValueError):
        return None
    try:
        page.madvise(_MADV_WIPEONFORK)
    except (OSError, ValueError):
        page.close()
        return None
    page[0] = 1
    return page


_mark = _wiped_on_fork()


def _mark_seen() -> None:
    global _pid
    _pid = os.getpid()
    if _mark is not None:
        _mark[0] = 1


def _run_hooks() -> None:
    _mark_seen()  # first: another thread of the child checking meanwhile runs nothing twice
    for hook in list(_hooks):
        try:
            hook()
        except Exception:  # one hook failing must not leave the others undone
            pass


def after_fork_in_child(hook: Callable[[], None]) -> None:
    """Run ``hook`` in every forked child, before it tracks anything, however it was forked."""
    _hooks.append(hook)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=hook)


if hasattr(os, "register_at_fork"):
    # Registered first, so it runs before the other hooks: the child is marked as seen.
    os.register_at_fork(after_in_child=_mark_seen)


def forked() -> bool:
    """Whether this process was forked without Python's hooks since they last ran."""
    if _mark is not None:
        return not _mark[0]
    return os.getpid() != _pid


def check() -> None:
    """If this process is a child forked without Python's hooks, run the hooks now.

    (No lock: a lock some parent thread held at such a fork would stay held in the child.
    Two threads of a child may both run the hooks; each hook bears that.)
    """
    if (not _mark[0]) if _mark is not None else os.getpid() != _pid:
        _run_hooks()
