"""trio: an AsyncTracker shared by the tasks of a nursery."""

from __future__ import annotations

import trio

import aicm


async def handle(tracker: aicm.AsyncTracker, job: int) -> None:
    await trio.sleep(0.01 * (job % 3))  # the real work
    await tracker.track(
        "anthropic",
        "claude-sonnet",
        {"input_tokens": 50 * job, "output_tokens": 10},
        client_customer_key="initech",
    )


async def main() -> None:
    async with (
        aicm.AsyncTracker(delivery_type="mem_queue") as tracker,
        trio.open_nursery() as nursery,  # closes first: every task has tracked by then
    ):
        for job in range(10):
            nursery.start_soon(handle, tracker, job)
    # Leaving the `async with` delivered everything still queued.
    print("10 jobs tracked")


if __name__ == "__main__":
    trio.run(main)
