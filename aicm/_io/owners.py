"""Lease owners: an id naming this process and its host, and whether an owner is gone (layer 2).

A queue row under lease carries its owner's id: the pid and, on Linux, the kernel's start
time of that process (a reused pid is not the old process), and a digest of the host
name, the boot and the pid namespace (where a pid means something). Another process on
the same host can then take the rows of an owner that no longer exists at once, instead
of waiting for the lease to run out. An owner on another host, or whose liveness cannot
be told, is taken to be alive: its leases expire by themselves.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import uuid

__all__ = ["owner_is_gone", "new_owner"]

_SEP = "."


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _host_key() -> str:
    """This host's identity for pids: the same for every process of one pid namespace.

    Worked out on first use, not at import (a queue may never be opened).
    """
    parts = (socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), _namespace())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from ``/proc``; None when there is no such process.

    Raises OSError when ``/proc`` cannot tell (not Linux).
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
        raise
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], fields[19]


def _start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (Linux), or "" when it cannot be told."""
    try:
        found = _proc_stat(pid)
    except (OSError, IndexError):
        return ""
    return "" if found is None else found[1]


def new_owner() -> str:
    """A fresh lease-owner id for this process: unique, and naming the process and host."""
    pid = os.getpid()
    return _SEP.join((uuid.uuid4().hex, _host_key(), str(pid), _start_time(pid)))


def owner_is_gone(owner: str) -> bool:
    """Whether ``owner`` names a process of this host that no longer runs.

    False whenever that cannot be told for sure: an owner of another host, an id in an
    older format, a platform without ``/proc`` where the pid still exists (it may have
    been reused, so the lease is left to expire).
    """
    parts = owner.split(_SEP)
    if len(parts) != 4 or parts[1] != _host_key() or not parts[2].isdigit():
        return False
    pid, started = int(parts[2]), parts[3]
    if pid == os.getpid():
        return started != _start_time(pid) if started else False
    try:
        found = _proc_stat(pid)
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass  # it exists (owned by another user, say)
        return False
    if found is None:
        return True
    state, start = found
    if state in ("Z", "X"):  # exited, not yet reaped by its parent
        return True
    return bool(started) and start != started
