"""The in-memory queue between producer threads and the actor: order, bounds, on-full
policies, waking the consumer, the doorbell of a persistent queue."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from aicm._core.exceptions import QueueFullError
from aicm._core.settings import OnFull
from aicm._delivery.buffer import Doorbell, RecordBuffer, Waker


def buffer(
    maxsize: int = 10, on_full: OnFull = OnFull.BLOCK, block_timeout: float | None = None
) -> tuple[RecordBuffer[str], list[tuple[str, str]]]:
    """A buffer, and the (record, reason) pairs its discard hook was given."""
    discarded: list[tuple[str, str]] = []
    buf: RecordBuffer[str] = RecordBuffer(
        maxsize,
        batch_size=4,
        on_full=on_full,
        block_timeout=block_timeout,
        on_discarded=lambda item, why: discarded.append((item, why)),
    )
    return buf, discarded


def fill(buf: RecordBuffer[str], *items: str) -> None:
    for item in items:
        assert buf.try_put(item)


# -- order and bounds -----------------------------------------------------------------


def test_take_returns_the_oldest_first_up_to_the_limit() -> None:
    """Records leave in the order they came, at most ``limit`` at a time."""
    buf, _ = buffer()
    fill(buf, "a", "b", "c", "d", "e")
    assert buf.take(2) == ["a", "b"]
    assert len(buf) == 3
    assert buf.take(10) == ["c", "d", "e"]
    assert buf.take(10) == []
    assert len(buf) == 0


def test_oldest_at_is_the_arrival_of_the_oldest_waiting_record() -> None:
    """``oldest_at`` follows the head of the queue; 0 when empty."""
    buf, _ = buffer()
    assert buf.oldest_at == 0.0
    before = time.monotonic()
    fill(buf, "a")
    time.sleep(0.01)
    fill(buf, "b")
    first = buf.oldest_at
    assert before <= first < time.monotonic() - 0.005
    buf.take(1)
    assert buf.oldest_at > first
    buf.take(1)
    assert buf.oldest_at == 0.0


def test_push_front_returns_records_to_the_head_with_their_age() -> None:
    """Records given back go before newer ones, in their order, keeping when they came;
    they may take the queue past its size (they were in it)."""
    buf, _ = buffer(maxsize=3)
    fill(buf, "c", "d", "e")
    buf.push_front(["a", "b"], queued_at=5.0)
    assert len(buf) == 5
    assert buf.oldest_at == 5.0
    assert buf.take(10) == ["a", "b", "c", "d", "e"]


def test_clear_empties_and_returns_everything() -> None:
    """``clear`` hands back every record still queued."""
    buf, _ = buffer()
    fill(buf, "a", "b")
    assert buf.clear() == ["a", "b"]
    assert len(buf) == 0


# -- on-full policies -------------------------------------------------------------------


def test_raise_refuses_a_record_when_full() -> None:
    """``raise``: try_put says no, put raises QueueFullError naming the size; nothing is lost."""
    buf, discarded = buffer(maxsize=2, on_full=OnFull.RAISE)
    fill(buf, "a", "b")
    assert not buf.try_put("c")
    with pytest.raises(QueueFullError, match=r"full \(2 records\)"):
        buf.put("c")
    assert buf.take(10) == ["a", "b"]
    assert discarded == []


def test_backpressure_drops_the_oldest_and_says_so() -> None:
    """``backpressure``: a full queue drops its oldest record, through its hook."""
    buf, discarded = buffer(maxsize=2, on_full=OnFull.BACKPRESSURE)
    fill(buf, "a", "b", "c", "d")
    assert buf.take(10) == ["c", "d"]
    assert discarded == [("a", "backpressure"), ("b", "backpressure")]


def test_block_waits_for_room_then_appends() -> None:
    """``block``: a producer thread waits while the queue is full, and appends as soon as
    the consumer takes a record."""
    buf, _ = buffer(maxsize=1)
    fill(buf, "a")
    done = threading.Event()

    def produce() -> None:
        buf.put("b")
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    assert not done.wait(0.1)  # still blocked
    assert buf.take(1) == ["a"]
    assert done.wait(5)
    thread.join()
    assert buf.take(1) == ["b"]


def test_block_times_out() -> None:
    """``block`` with a timeout: QueueFullError once the queue stayed full that long."""
    buf, _ = buffer(maxsize=1, block_timeout=0.05)
    fill(buf, "a")
    started = time.monotonic()
    with pytest.raises(QueueFullError, match=r"stayed full for 0\.05 s"):
        buf.put("b")
    assert time.monotonic() - started >= 0.05
    assert buf.take(10) == ["a"]


def test_close_releases_a_blocked_producer_and_refuses_new_records() -> None:
    """A producer blocked on a full queue gets QueueFullError at close; later puts too."""
    buf, _ = buffer(maxsize=1)
    fill(buf, "a")
    raised: list[BaseException] = []

    def produce() -> None:
        try:
            buf.put("b")
        except QueueFullError as exc:
            raised.append(exc)

    thread = threading.Thread(target=produce)
    thread.start()
    time.sleep(0.05)
    buf.close()
    thread.join(5)
    assert [str(e) for e in raised] == ["the delivery queue is closed"]
    with pytest.raises(QueueFullError, match="closed"):
        buf.try_put("c")
    assert buf.clear() == ["a"]


def test_forget_after_fork_drops_records_and_refuses_more() -> None:
    """In a forked child the parent's records are not the child's to send."""
    buf, _ = buffer()
    fill(buf, "a")
    buf.forget_after_fork()
    assert len(buf) == 0
    with pytest.raises(QueueFullError):
        buf.try_put("b")


# -- waking the consumer --------------------------------------------------------------


@pytest.mark.anyio
async def test_a_producer_thread_wakes_the_consumer_at_the_count_it_waits_for(
    anyio_backend: str,
) -> None:
    """The consumer sleeps until the batch is full; the producer thread that fills it
    wakes it, and not before."""
    buf, _ = buffer()
    waker = Waker()
    assert buf.wait_for(waker, 3)
    woke_at: list[int] = []

    def produce() -> None:
        for item in "abc":
            time.sleep(0.02)
            buf.put(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, produce)
        with anyio.fail_after(5):
            await waker.wait()
        woke_at.append(len(buf))
    buf.cancel_wait()
    assert woke_at == [3]


@pytest.mark.anyio
async def test_wait_for_a_count_already_reached_needs_no_wait(anyio_backend: str) -> None:
    """wait_for says False when the records are already there."""
    buf, _ = buffer()
    fill(buf, "a", "b")
    assert not buf.wait_for(Waker(), 2)
    assert buf.wait_for(Waker(), 3)
    buf.cancel_wait()


@pytest.mark.anyio
async def test_a_wake_that_comes_first_is_kept(anyio_backend: str) -> None:
    """Level-triggered: a wake while nobody waits makes the next wait return at once."""
    waker = Waker()
    waker.wake()
    with anyio.fail_after(1):
        await waker.wait()
    started = anyio.current_time()
    await waker.wait(0.05)  # no wake pending: the timeout ends it
    assert anyio.current_time() - started >= 0.04


@pytest.mark.anyio
async def test_aput_waits_for_room_on_a_full_queue(anyio_backend: str) -> None:
    """``aput`` on a full ``block`` queue waits for the consumer to take, then appends."""
    buf, _ = buffer(maxsize=1)
    fill(buf, "a")
    async with anyio.create_task_group() as tg:
        tg.start_soon(buf.aput, "b")
        await anyio.sleep(0.02)
        assert len(buf) == 1
        assert buf.take(1) == ["a"]
    assert buf.take(1) == ["b"]


@pytest.mark.anyio
async def test_aput_raises_or_times_out_when_full(anyio_backend: str) -> None:
    """``aput``: QueueFullError at once under ``raise``, after the timeout under ``block``."""
    strict, _ = buffer(maxsize=1, on_full=OnFull.RAISE)
    fill(strict, "a")
    with pytest.raises(QueueFullError, match="is full"):
        await strict.aput("b")
    patient, _ = buffer(maxsize=1, block_timeout=0.05)
    fill(patient, "a")
    with pytest.raises(QueueFullError, match="stayed full"):
        await patient.aput("b")
    assert patient.take(10) == ["a"]


# -- the doorbell -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_doorbell_counts_rings_and_wakes_at_the_mark(anyio_backend: str) -> None:
    """Rings add up from the first one's time; the ring that reaches the mark wakes the
    actor; reset starts afresh."""
    bell = Doorbell()
    waker = Waker()
    assert bell.count == 0
    assert bell.wait_for(waker, 5)
    before = time.monotonic()
    bell.ring(2)
    assert bell.first_at >= before
    first = bell.first_at
    bell.ring(2)
    assert bell.first_at == first
    assert bell.count == 4

    async def ring_later() -> None:
        await anyio.sleep(0.02)
        await anyio.to_thread.run_sync(bell.ring)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ring_later)
        with anyio.fail_after(5):
            await waker.wait()
    assert bell.count == 5
    assert not bell.wait_for(waker, 5)
    bell.reset()
    assert bell.count == 0
    assert bell.wait_for(waker, 1)
    bell.cancel_wait()
