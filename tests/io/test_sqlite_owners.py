"""Lease owners: a queue row's owner id tells another process of this host whether it is gone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aicm._io import owners


def _parts(owner: str) -> list[str]:
    return owner.split(".")


def test_this_process_is_not_gone() -> None:
    """The owner id of the running process names a live owner."""
    assert not owners.owner_is_gone(owners.new_owner())


def test_an_ended_process_is_gone() -> None:
    """A process that has exited (and been reaped) no longer holds its leases."""
    child = subprocess.run(
        [sys.executable, "-c", "from aicm._io.owners import new_owner; print(new_owner())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert owners.owner_is_gone(child.stdout.strip())


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="start times come from /proc")
def test_a_reused_pid_is_gone() -> None:
    """A live pid started at another time than the owner's is another process: the owner is gone."""
    uid, host, _pid, started = _parts(owners.new_owner())
    parent = os.getppid()
    assert not owners.owner_is_gone(".".join((uid, host, str(parent), owners._start_time(parent))))
    assert owners.owner_is_gone(".".join((uid, host, str(parent), str(int(started) + 1))))


def test_another_hosts_owner_is_never_judged() -> None:
    """An owner of another host (a file shared over the network) is taken to be alive."""
    uid, _host, _pid, started = _parts(owners.new_owner())
    assert not owners.owner_is_gone(".".join((uid, "0" * 16, "999999999", started)))


def test_an_old_owner_id_is_never_judged() -> None:
    """Owner ids of older versions (a bare uuid) are taken to be alive: their leases expire."""
    assert not owners.owner_is_gone("0123456789abcdef0123456789abcdef")
