"""Scenario 10: what ``CostManager`` adds to a call of the real ``openai`` client.

The real ``openai.OpenAI`` / ``openai.AsyncOpenAI`` clients call the fake OpenAI API of the
tests (``tests/fakes``), served by a process of its own (:mod:`benchmarks._fake_openai`), so
what this process spends is the client's work alone: building the request, httpx, parsing
the answer into a ``ChatCompletion``, and, through ``CostManager``, the tracking (the
handling config's extraction, the record, the MEM_QUEUE put and the delivery to the
collector: each round ends with ``flush()`` inside the measured window).

The figure is CPU time of this whole process per call, every thread included, over a round
of sequential calls; the rounds of the four subjects are interleaved.

That call costs ~1 ms of CPU and varies by more than the tracking it carries, so a second
group isolates what tracking adds to one: a stand-in ``chat.completions.create`` returns a
real ``ChatCompletion`` (validated from the fake's own JSON answer on every call), called
directly and through ``CostManager`` / ``AsyncCostManager``; each call is timed on its own,
as in the ``proxy`` scenario, and the difference of the medians is what tracking adds
(the handling config's extraction from the pydantic objects, the record, the MEM_QUEUE
put; delivery happens between rounds).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._common import (
    Context,
    Measure,
    ScenarioResult,
    Target,
    child_env,
    rotate,
    run_timed_phases,
    start_server,
    time_calls,
    timer_overhead_ns,
)
from .._subjects import aicm_options, portal, time_awaits

NAME = "openai_sdk"
TITLE = "10. CostManager on the real openai client (CPU us/call)"

API = "openai"
CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
UNIT = "us CPU/call"
SYNC_DIRECT = "openai chat.completions.create, untracked (sync)"
SYNC_TRACKED = "aicm CostManager(openai.OpenAI) chat.completions.create (sync)"
ASYNC_DIRECT = "openai chat.completions.create, untracked (asyncio)"
ASYNC_TRACKED = "aicm AsyncCostManager(openai.AsyncOpenAI) chat.completions.create (asyncio)"
# The isolating group: a stand-in create that returns a real ChatCompletion.
OBJ_UNIT = "us/call"
OBJ_SYNC_DIRECT = "ChatCompletion stand-in create, untracked (sync)"
OBJ_SYNC_TRACKED = "aicm CostManager(stand-in) create -> ChatCompletion (sync)"
OBJ_ASYNC_DIRECT = "ChatCompletion stand-in create, untracked (asyncio)"
OBJ_ASYNC_TRACKED = "aicm AsyncCostManager(stand-in) create -> ChatCompletion (asyncio)"


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
        answer = _canned_answer(url)
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
    # Reported, not held to the 15 us target: the whole process's CPU includes the delivery
    # thread's encoding and sending of each record (what any record costs, scenario 3), and
    # these rounds move by more than tracking adds. The target is the stand-in rows' figure,
    # measured as the proxy scenario measures the toy client.
    result.notes.append(
        f"{n} sequential calls per round and subject; CPU of the whole process, delivery "
        f"included ({sent:,} records delivered to the collector in all); reported: the "
        "<= 15 us target is the stand-in rows' figure"
    )
    _isolated(ctx, result, configs, answer)
    return result


def _canned_answer(url: str) -> dict[str, Any]:
    """The fake's JSON answer to ``CHAT``, as the real client received it."""
    import openai

    with openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(**CHAT)
        body: dict[str, Any] = raw.http_response.json()
    return body


class _StandInCompletions:
    def __init__(self, answer: dict[str, Any]) -> None:
        from openai.types.chat import ChatCompletion

        self._validate = ChatCompletion.model_validate
        self._answer = answer

    def create(self, **_: Any) -> Any:
        return self._validate(self._answer)


class _AsyncStandInCompletions(_StandInCompletions):
    async def create(self, **_: Any) -> Any:  # type: ignore[override]
        return self._validate(self._answer)


class _Chat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


class _StandIn:
    """A client whose ``chat.completions.create`` returns a real ``ChatCompletion`` at once."""

    def __init__(self, completions: Any) -> None:
        self.chat = _Chat(completions)


def _isolated(
    ctx: Context, result: ScenarioResult, configs: list[dict[str, Any]], answer: dict[str, Any]
) -> None:
    """What tracking adds to a call that returns a real ``ChatCompletion``, per call timed."""
    import aicm

    overhead = timer_overhead_ns()
    n = ctx.pick(5000, 1000)
    phases: list[tuple[Measure, Callable[[], list[int]], Callable[[], object]]] = []
    with contextlib.ExitStack() as stack:
        p = stack.enter_context(portal())
        options = aicm_options(ctx.collector, delivery_type="mem_queue", queue_size=4 * n)
        client = _StandIn(_StandInCompletions(answer))
        manager = aicm.CostManager(client, api_id=API, configs=configs, **options)
        stack.callback(manager.close, 60)
        tracked = manager.client

        def direct() -> object:
            return client.chat.completions.create(**CHAT)

        def proxied() -> object:
            return tracked.chat.completions.create(**CHAT)

        aclient = _StandIn(_AsyncStandInCompletions(answer))

        def build() -> Any:
            return aicm.AsyncCostManager(aclient, api_id=API, configs=configs, **options)

        amanager = stack.enter_context(p.wrap_async_context_manager(p.call(build)))
        atracked = amanager.client

        def adirect() -> Awaitable[object]:
            return aclient.chat.completions.create(**CHAT)  # type: ignore[no-any-return]

        def aproxied() -> Awaitable[object]:
            return atracked.chat.completions.create(**CHAT)  # type: ignore[no-any-return]

        u = OBJ_UNIT
        phases = [
            (
                result.measure(OBJ_SYNC_DIRECT, "floor", "sync", u, "lower"),
                lambda: time_calls(direct, n),
                _nop,
            ),
            (
                result.measure(OBJ_SYNC_TRACKED, "aicm", "sync", u, "lower"),
                lambda: time_calls(proxied, n),
                lambda: manager.flush(60),
            ),
            (
                result.measure(OBJ_ASYNC_DIRECT, "floor", "async", u, "lower"),
                lambda: p.call(time_awaits, adirect, n),
                _nop,
            ),
            (
                result.measure(OBJ_ASYNC_TRACKED, "aicm", "async", u, "lower"),
                lambda: p.call(time_awaits, aproxied, n),
                lambda: p.call(amanager.flush, 60),
            ),
        ]
        run_timed_phases(ctx, phases, overhead)
        sent = manager.health().sent + amanager.health().sent

    for kind, direct_name, tracked_name in (
        ("sync", OBJ_SYNC_DIRECT, OBJ_SYNC_TRACKED),
        ("asyncio", OBJ_ASYNC_DIRECT, OBJ_ASYNC_TRACKED),
    ):
        d = result.get(direct_name).median
        t = result.get(tracked_name).median
        added = None if d is None or t is None else t - d
        result.extra[f"added_us_chatcompletion_{kind}"] = added
        result.targets.append(
            Target(
                f"added per call returning a real ChatCompletion ({kind}), medians",
                added,
                "<=",
                15.0,
                "us/call",
            )
        )
    result.notes.append(
        f"stand-in rows: {n} calls per round, each timed; added = median(tracked) - "
        f"median(untracked), the same measure as the proxy scenario's toy client "
        f"({sent:,} records delivered between rounds)"
    )


def _nop() -> None:
    return None
