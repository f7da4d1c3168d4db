"""Scenario 4: what ``CostManager`` adds to each wrapped call, extraction and queueing included.

A stand-in client shaped like an LLM SDK (``client.chat.completions.create(...)``) answers
at once, so the difference between calling it through ``manager.client`` and calling it
directly is the proxy's cost: the attribute hops, the handling config's extraction, the
``/track-usage`` record and the MEM_QUEUE put. Sync (``CostManager``) and asyncio
(``AsyncCostManager``) alike; the records are delivered to the collector between rounds.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from .._common import (
    Context,
    Measure,
    ScenarioResult,
    Target,
    run_timed_phases,
    time_calls,
    timer_overhead_ns,
)
from .._subjects import aicm_options, portal, time_awaits

NAME = "proxy"
TITLE = "4. CostManager proxy overhead per wrapped call (us/call)"

API = "benchchat"
CONFIG: dict[str, Any] = {
    "config_id": "bench-chat",
    "api_id": API,
    "handling_config": {
        "tracked_methods": ["chat.completions.create"],
        "request_fields": ["model"],
        "response_fields": [{"key": "usage", "path": "usage"}, {"key": "id", "path": "id"}],
        "payload_mapping": {
            "config_id": "config_identifier",
            "service_id": "request_data.model",
            "timestamp": "timestamp",
            "response_id": "response_data.id",
            "usage": "response_data.usage",
        },
    },
}
MESSAGES = [{"role": "user", "content": "Hello"}]
_ids = itertools.count()


def _answer(model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "model": model,
        "choices": [{"message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }


class _Completions:
    def create(self, *, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
        return _answer(model)


class _AsyncCompletions:
    async def create(self, *, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
        return _answer(model)


class _Chat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


class BenchChat:
    """A sync client in the shape of an LLM SDK."""

    def __init__(self) -> None:
        self.chat = _Chat(_Completions())


class AsyncBenchChat:
    """An async client in the shape of an LLM SDK."""

    def __init__(self) -> None:
        self.chat = _Chat(_AsyncCompletions())


def run(ctx: Context) -> ScenarioResult:
    """Direct and proxied calls, rounds interleaved; overhead = proxied - direct (medians)."""
    import aicm

    result = ScenarioResult(NAME, TITLE)
    overhead = timer_overhead_ns()
    n = ctx.pick(5000, 1000)
    us = "us/call"
    phases: list[tuple[Measure, Callable[[], list[int]], Callable[[], object]]] = []
    with contextlib.ExitStack() as stack:
        p = stack.enter_context(portal())
        options = aicm_options(ctx.collector, delivery_type="mem_queue", queue_size=4 * n)

        client = BenchChat()
        manager = aicm.CostManager(client, api_id=API, configs=[CONFIG], **options)
        stack.callback(manager.close, 60)
        tracked = manager.client

        def direct() -> object:
            return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

        def proxied() -> object:
            return tracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

        phases.append(
            (
                result.measure("direct call (sync)", "floor", "sync", us, "lower"),
                lambda: time_calls(direct, n),
                _nop,
            )
        )
        phases.append(
            (
                result.measure(
                    "aicm CostManager(client).client call (sync)", "aicm", "sync", us, "lower"
                ),
                lambda: time_calls(proxied, n),
                lambda: manager.flush(60),
            )
        )

        aclient = AsyncBenchChat()

        def build() -> Any:
            return aicm.AsyncCostManager(aclient, api_id=API, configs=[CONFIG], **options)

        amanager = stack.enter_context(p.wrap_async_context_manager(p.call(build)))
        atracked = amanager.client

        def adirect() -> Awaitable[object]:
            return aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[no-any-return]

        def aproxied() -> Awaitable[object]:
            return atracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[no-any-return]

        phases.append(
            (
                result.measure("direct call (asyncio)", "floor", "async", us, "lower"),
                lambda: p.call(time_awaits, adirect, n),
                _nop,
            )
        )
        phases.append(
            (
                result.measure(
                    "aicm AsyncCostManager(client).client call (asyncio)",
                    "aicm",
                    "async",
                    us,
                    "lower",
                ),
                lambda: p.call(time_awaits, aproxied, n),
                lambda: p.call(amanager.flush, 60),
            )
        )

        run_timed_phases(ctx, phases, overhead)
        sent = manager.health().sent + amanager.health().sent

    for kind, direct_name, proxied_name in (
        ("sync", "direct call (sync)", "aicm CostManager(client).client call (sync)"),
        (
            "asyncio",
            "direct call (asyncio)",
            "aicm AsyncCostManager(client).client call (asyncio)",
        ),
    ):
        d = result.get(direct_name).median
        q = result.get(proxied_name).median
        value = None if d is None or q is None else q - d
        result.extra[f"overhead_us_{kind}"] = value
        result.targets.append(
            Target(f"proxy overhead per call ({kind}), median", value, "<=", 15.0, "us/call")
        )
    result.notes.append(
        "overhead = median(proxied) - median(direct); each proxied call yields one "
        f"/track-usage record on MEM_QUEUE ({sent:,} delivered in all)"
    )
    return result


def _nop() -> None:
    return None
