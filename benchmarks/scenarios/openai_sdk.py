"""Scenario 10: what ``CostManager`` adds to a call of the real ``openai`` client.

The real ``openai.OpenAI`` / ``openai.AsyncOpenAI`` clients call the fake OpenAI API of the
tests (``tests/fakes``), served by a process of its own (:mod:`benchmarks._fake_openai`), so
what this process spends is the client's work alone: building the request, httpx, parsing
the answer into a ``ChatCompletion``, and, through ``CostManager``, the tracking (the
handling config's extraction, the record, the MEM_QUEUE put and the delivery to the
collector: each round ends with ``flush()`` inside the measured window).

The figure is CPU time of this whole process per call, every thread included, over a round
of sequential calls; the rounds of the four subjects are interleaved.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from .._common import (
    Context,
    Measure,
    ScenarioResult,
    Target,
    child_env,
    rotate,
    start_server,
)
from .._subjects import aicm_options, portal

NAME = "openai_sdk"
TITLE = "10. CostManager on the real openai client (CPU us/call)"

API = "openai"
CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
UNIT = "us CPU/call"
SYNC_DIRECT = "openai chat.completions.create, untracked (sync)"
SYNC_TRACKED = "aicm CostManager(openai.OpenAI) chat.completions.create (sync)"
ASYNC_DIRECT = "openai chat.completions.create, untracked (asyncio)"
ASYNC_TRACKED = "aicm AsyncCostManager(openai.AsyncOpenAI) chat.completions.create (asyncio)"


def _cpu_per_call(calls: Callable[[], object], settle: Callable[[], object], n: int) -> float:
    """Process CPU microseconds per call of ``n`` calls and the settling after them."""
    t0 = time.process_time_ns()
    calls()
    settle()
    return (time.process_time_ns() - t0) / n / 1000


def run(ctx: Context) -> ScenarioResult:
    """Untracked and tracked clients, sync and asyncio, rounds interleaved."""
    import openai

    import aicm
    from tests.sdk_support import served

    result = ScenarioResult(NAME, TITLE)
    configs = served("openai-chat", api_id=API)  # the config docs/cost_manager.md shows
    n = ctx.pick(500, 100)
    fake, url = start_server(["-m", "benchmarks._fake_openai"], child_env(ctx.tmp))
    phases: list[tuple[Measure, Callable[[], object], Callable[[], object]]] = []
    try:
        with contextlib.ExitStack() as stack:
            p = stack.enter_context(portal())
            options = aicm_options(ctx.collector, delivery_type="mem_queue", queue_size=4 * n)
            client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
            stack.callback(client.close)
            manager = aicm.CostManager(client, api_id=API, configs=configs, **options)
            stack.callback(manager.close, 60)
            tracked = manager.client

            def direct() -> None:
                for _ in range(n):
                    client.chat.completions.create(**CHAT)

            def proxied() -> None:
                for _ in range(n):
                    tracked.chat.completions.create(**CHAT)

            aclient = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
            stack.callback(p.call, aclient.close)

            def build() -> Any:
                return aicm.AsyncCostManager(aclient, api_id=API, configs=configs, **options)

            amanager = stack.enter_context(p.wrap_async_context_manager(p.call(build)))
            atracked = amanager.client

            async def adirect() -> None:
                for _ in range(n):
                    await aclient.chat.completions.create(**CHAT)

            async def aproxied() -> None:
                for _ in range(n):
                    await atracked.chat.completions.create(**CHAT)

            phases = [
                (result.measure(SYNC_DIRECT, "floor", "sync", UNIT, "lower"), direct, _nop),
                (
                    result.measure(SYNC_TRACKED, "aicm", "sync", UNIT, "lower"),
                    proxied,
                    lambda: manager.flush(60),
                ),
                (
                    result.measure(ASYNC_DIRECT, "floor", "async", UNIT, "lower"),
                    lambda: p.call(adirect),
                    _nop,
                ),
                (
                    result.measure(ASYNC_TRACKED, "aicm", "async", UNIT, "lower"),
                    lambda: p.call(aproxied),
                    lambda: p.call(amanager.flush, 60),
                ),
            ]
            for _, calls, settle in phases if not ctx.quick else []:  # warm-up
                calls()
                settle()
            for r in range(ctx.rounds):
                for measure, calls, settle in rotate(phases, r):
                    measure.add_value(_cpu_per_call(calls, settle, n), samples=n)
            sent = manager.health().sent + amanager.health().sent
    finally:
        fake.terminate()
        fake.communicate(timeout=30)

    for kind, direct_name, tracked_name in (
        ("sync", SYNC_DIRECT, SYNC_TRACKED),
        ("asyncio", ASYNC_DIRECT, ASYNC_TRACKED),
    ):
        d = result.get(direct_name).median
        t = result.get(tracked_name).median
        added = None if d is None or t is None else t - d
        result.extra[f"added_cpu_us_{kind}"] = added
        if added is not None and d:
            result.notes.append(
                f"{kind}: tracking adds {added:.1f} us of CPU per call, "
                f"{added / d * 100:.0f}% of the untracked call's {d:.0f} us"
            )
        result.targets.append(
            Target(
                f"CPU added per real openai call ({kind}), medians", added, "<=", 15.0, "us/call"
            )
        )
    result.notes.append(
        f"{n} sequential calls per round and subject; CPU of the whole process, delivery "
        f"included ({sent:,} records delivered to the collector in all)"
    )
    return result


def _nop() -> None:
    return None
