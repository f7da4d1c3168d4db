"""The memory queue's actor is woken by a full batch, not by every first record: a lone
record still goes within its batch window, and a close right after it delivers it, from
`AsyncTracker.track` and from the sync facade's `track_async` alike."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from delivery_helpers import API, SERVICE, USAGE, duplicates, new_ids, stored_ids, wait_until

from aicm import AsyncTracker, ClosedError, Tracker
from aicm._delivery.worker import shared_runtime
from aicm.collector import Faults, LocalCollector

pytestmark = pytest.mark.anyio

INTERVAL = 0.6
# How late a record may arrive after its window on a loaded machine.
SLACK = 0.6
FACADES = ["AsyncTracker", "Tracker"]

Track = Callable[[str], Awaitable[object]]


class Opened:
    """A tracker of either facade: ``track(response_id)`` and ``close()`` as awaitables."""

    def __init__(self, tracker: AsyncTracker | Tracker) -> None:
        self.tracker = tracker

    async def track(self, rid: str) -> object:
        if isinstance(self.tracker, Tracker):
            return await self.tracker.track_async(API, SERVICE, USAGE, response_id=rid)
        return await self.tracker.track(API, SERVICE, USAGE, response_id=rid)

    async def close(self) -> int:
        return await self.tracker.aclose(10)


@asynccontextmanager
async def opened(facade: str, **options: Any) -> AsyncIterator[Opened]:
    """A MEM_QUEUE tracker of ``facade``, closed at the end of the block."""
    if facade == "Tracker":
        sync = await Tracker.create_async(delivery_type="mem_queue", **options)
        try:
            yield Opened(sync)
        finally:
            await sync.aclose(10)
    else:
        async with AsyncTracker(delivery_type="mem_queue", **options) as tracker:
            yield Opened(tracker)


async def arrival_delay(collector: LocalCollector, tracker: Opened, rid: str) -> float:
    """Track one record; how long until the collector stored it."""
    start = time.monotonic()
    await tracker.track(rid)
    assert await wait_until(lambda: rid in stored_ids(collector), timeout=INTERVAL + 5)
    return time.monotonic() - start


@pytest.mark.parametrize("facade", FACADES)
async def test_a_record_right_after_a_batch_goes_within_its_window(
    collector: LocalCollector, connection: dict[str, str], facade: str
) -> None:
    """After a full batch the actor waits a window for the next one instead of being woken
    by the first record: a record arriving late in that window still goes one batch
    interval after it arrived, not a window later."""
    async with opened(facade, max_batch_size=2, batch_interval=INTERVAL, **connection) as t:
        for rid in new_ids(2, "full"):
            await t.track(rid)  # a full batch: sent at once, the actor's window begins
        assert await wait_until(lambda: collector.count("track") == 2, timeout=5)
        await anyio.sleep(INTERVAL / 2)  # late in the window
        delay = await arrival_delay(collector, t, "late")
        assert INTERVAL - 0.1 <= delay <= INTERVAL + SLACK
    assert duplicates(collector) == 0


@pytest.mark.parametrize("facade", FACADES)
async def test_a_record_after_a_quiet_spell_goes_within_its_window(
    collector: LocalCollector, connection: dict[str, str], facade: str
) -> None:
    """An actor idle for longer than a window (no timer running) is woken by the first
    record again, and sends it one batch interval later."""
    async with opened(facade, max_batch_size=100, batch_interval=INTERVAL, **connection) as t:
        first = await arrival_delay(collector, t, "first")
        await anyio.sleep(INTERVAL * 2)  # the post-batch window ends: idle
        second = await arrival_delay(collector, t, "second")
    for delay in (first, second):
        assert INTERVAL - 0.1 <= delay <= INTERVAL + SLACK
    assert sorted(stored_ids(collector)) == ["first", "second"]


@pytest.mark.parametrize("facade", FACADES)
async def test_close_right_after_one_record_delivers_it(
    collector: LocalCollector, connection: dict[str, str], facade: str
) -> None:
    """A close straight after one record (in the actor's first window, and later in its
    post-batch window) delivers it at once, whatever the batch interval."""
    for i in range(5):
        async with opened(facade, batch_interval=30, max_batch_size=2, **connection) as t:
            if i % 2:
                for rid in new_ids(2, f"b{i}-"):
                    await t.track(rid)  # a full batch first: the post-batch window
            await t.track(f"one{i}")
            start = time.monotonic()
            assert await t.close() == 0
            assert time.monotonic() - start < 5
        assert f"one{i}" in stored_ids(collector)
    assert duplicates(collector) == 0


async def test_track_async_refuses_a_record_once_a_close_began(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """The sync facade's queued fast path checks that no close began, as track() does: a
    record offered meanwhile raises ClosedError at the call site instead of being queued
    behind the close (and counted as left at its end)."""
    collector.set_faults(Faults(latency=1.0))  # the close waits on the slow service
    tracker = await Tracker.create_async(delivery_type="mem_queue", **connection)
    await tracker.track_async(API, SERVICE, USAGE, response_id="before")
    twin = tracker._async
    left: list[int] = []

    async def close_twin() -> None:
        # A close that began on the delivery loop, before this facade saw it.
        left.append(await anyio.to_thread.run_sync(tracker._runtime.call, twin.aclose, 10))

    async with anyio.create_task_group() as tg:
        tg.start_soon(close_twin)
        assert await wait_until(lambda: twin.engine.closing, timeout=5)
        with pytest.raises(ClosedError):
            await tracker.track_async(API, SERVICE, USAGE, response_id="during")
        with pytest.raises(ClosedError):
            tracker.track(API, SERVICE, USAGE, response_id="during-sync")
    await tracker.aclose()
    assert left == [0]
    assert stored_ids(collector) == ["before"]


def test_a_loop_that_always_has_work_ready_still_sees_io(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """The delivery runtime polls the OS only when no callback is ready: a task there that
    never sleeps (it only yields) must not keep the actor's answers from being read."""
    stop = threading.Event()
    spins = []

    async def spin() -> None:
        while not stop.is_set():
            spins.append(1)
            await anyio.lowlevel.checkpoint()  # always ready: the loop never has to wait

    with Tracker(delivery_type="mem_queue", batch_interval=0.05, **connection) as tracker:
        runtime = shared_runtime()

        async def start_spinning() -> None:
            runtime.task_group.start_soon(spin)

        runtime.call(start_spinning)
        ids = new_ids(20, "busy")
        try:
            for rid in ids:
                tracker.track(API, SERVICE, USAGE, response_id=rid)
            assert tracker.flush(10) == 0
        finally:
            stop.set()
    assert spins, "the spinning task never ran"
    assert sorted(stored_ids(collector)) == sorted(ids)
