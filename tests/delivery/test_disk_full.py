"""A full disk: what is queued is still delivered, and a track() that cannot write says so.

The disk is a real one: a 256 KiB tmpfs mounted for the test (so it needs the right to
mount, as root in a container has; elsewhere the test is skipped).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from delivery_helpers import API, SERVICE, stored_ids

from aicm import QueueStoreError, Tracker
from aicm.collector import Faults, LocalCollector


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system of its own, mounted at a fresh folder."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_still_delivers_what_is_queued(
    collector: LocalCollector, connection: dict[str, str], small_disk: Path
) -> None:
    """Track until the disk is full: that track() raises a clear QueueStoreError, and every
    record queued before is delivered at once while the disk stays full."""
    collector.set_faults(Faults(failure_rate=1.0))  # the service is down meanwhile
    tracker = Tracker(
        **connection,
        delivery_type="persistent_queue",
        db_path=str(small_disk / "queue.db"),
        batch_interval=0.01,
    )
    tracked: list[str] = []
    try:
        failure: QueueStoreError | None = None
        for n in range(100_000):
            rid = f"full-{n}"
            try:
                tracker.track(API, SERVICE, {"input_tokens": n, "pad": "x" * 200}, response_id=rid)
            except QueueStoreError as exc:
                failure = exc
                break
            tracked.append(rid)
        assert failure is not None
        assert "no room to write to the queue file" in str(failure)
        assert "was not queued" in str(failure)
        assert tracked
        stats = os.statvfs(small_disk)
        assert stats.f_bavail * stats.f_frsize < 16 * 1024  # still full
        collector.set_faults(Faults())
        started = time.monotonic()
        assert tracker.flush(10) == 0
        assert time.monotonic() - started < 5
        assert tracker.health().queued == 0
    finally:
        tracker.close(2)
    assert sorted(set(stored_ids(collector))) == sorted(tracked)


@pytest.mark.anyio
async def test_a_full_disk_async(
    collector: LocalCollector, connection: dict[str, str], small_disk: Path
) -> None:
    """The same through an AsyncTracker (asyncio and trio): a clear error, then delivery."""
    from aicm import AsyncTracker

    collector.set_faults(Faults(failure_rate=1.0))
    tracked: list[str] = []
    failure: QueueStoreError | None = None
    async with AsyncTracker(
        **connection,
        delivery_type="persistent_queue",
        db_path=str(small_disk / "queue.db"),
        batch_interval=0.01,
    ) as tracker:
        for n in range(100_000):
            rid = f"afull-{n}"
            try:
                await tracker.track(API, SERVICE, {"n": n, "pad": "x" * 200}, response_id=rid)
            except QueueStoreError as exc:
                failure = exc
                break
            tracked.append(rid)
        assert failure is not None
        assert "no room to write to the queue file" in str(failure)
        collector.set_faults(Faults())
        assert await tracker.flush(10) == 0
    assert sorted(set(stored_ids(collector))) == sorted(tracked)
