"""A FastAPI app under uvicorn, tracking in one mode: the subject of the web scenario.

    python -m benchmarks._webapp MODE --collector URL

It prints ``http://127.0.0.1:PORT`` once it listens (loopback only) and serves until it is
terminated. ``GET /chat`` is the handler under load: it awaits a fake LLM client that
answers at once (so the handler's cost is the framework's and the tracking's), tracks the
answer's usage the way MODE says, and returns a small JSON body. Two endpoints serve the
scenario between load rounds:

- ``POST /_bench/start``: start counting requests and sampling the event loop's lag.
- ``POST /_bench/stop``: deliver what is queued (``flush``), stop sampling, and return the
  requests handled, the process's CPU seconds so far and the lag samples' p50/p99 (ms).

The lag sampler sleeps 5 ms on the loop and records how late it woke: a handler that keeps
the loop busy shows up there, whatever the load generator sees.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

MODES: dict[str, str] = {
    "none": "no tracking",
    "cost_manager": "AsyncCostManager MEM_QUEUE",
    "async_mem": "AsyncTracker.track MEM_QUEUE",
    "async_imm": "AsyncTracker.track IMMEDIATE",
    "sync_mem": "Tracker.track_async MEM_QUEUE",
    "sync_imm": "Tracker.track_async IMMEDIATE",
}
LAG_INTERVAL = 0.005
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Hello"}]


class _Stats:
    """What the app counts between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.requests = 0
        self.lags: list[float] = []
        self.sampling = False


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


async def _sample_lag(stats: _Stats) -> None:
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    clock = time.perf_counter
    while True:
        if not stats.sampling:
            await asyncio.sleep(0.05)
            continue
        started = clock()
        await asyncio.sleep(LAG_INTERVAL)
        stats.lags.append(max(0.0, clock() - started - LAG_INTERVAL))


def build_app(mode: str, collector: str) -> Any:
    """The FastAPI app for ``mode`` (see :data:`MODES`), delivering to ``collector``."""
    from fastapi import FastAPI

    import aicm

    from ._common import API_ID, KEY
    from .scenarios.proxy import API, CONFIG, AsyncBenchChat

    stats = _Stats()
    options: dict[str, Any] = {"aicm_api_key": KEY, "aicm_api_base": collector}
    fake = AsyncBenchChat()
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        sampler = asyncio.get_running_loop().create_task(_sample_lag(stats))
        async with contextlib.AsyncExitStack() as stack:
            if mode == "none":
                state["flush"] = _no_flush
                state["client"] = fake
            elif mode == "cost_manager":
                manager = aicm.AsyncCostManager(
                    fake, api_id=API, configs=[CONFIG], delivery_type="mem_queue", **options
                )
                await stack.enter_async_context(manager)
                state["client"] = manager.client
                state["flush"] = lambda: manager.flush(60)
            elif mode.startswith("async_"):
                delivery = "mem_queue" if mode == "async_mem" else "immediate"
                tracker = aicm.AsyncTracker(delivery_type=delivery, **options)
                await stack.enter_async_context(tracker)
                state["client"] = fake
                state["track"] = tracker.track
                state["flush"] = lambda: tracker.flush(60)
            else:
                delivery = "mem_queue" if mode == "sync_mem" else "immediate"
                sync_tracker = aicm.Tracker(delivery_type=delivery, **options)
                stack.callback(sync_tracker.close, 30)
                state["client"] = fake
                state["track"] = sync_tracker.track_async

                async def flush_sync() -> object:
                    import anyio.to_thread

                    return await anyio.to_thread.run_sync(sync_tracker.flush, 60)

                state["flush"] = flush_sync
            yield
        sampler.cancel()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/chat")
    async def chat() -> dict[str, Any]:
        stats.requests += 1
        answer = await state["client"].chat.completions.create(model=MODEL, messages=MESSAGES)
        track: Callable[..., Awaitable[object]] | None = state.get("track")
        if track is not None:
            await track(API_ID, MODEL, answer["usage"])
        return {"id": answer["id"], "usage": answer["usage"]}

    @app.post("/_bench/start")
    async def start() -> dict[str, Any]:
        stats.requests = 0
        stats.lags = []
        stats.sampling = True
        return {"cpu": time.process_time()}

    @app.post("/_bench/stop")
    async def stop() -> dict[str, Any]:
        stats.sampling = False
        requests = stats.requests
        await state["flush"]()  # delivering what this round queued is part of its cost
        lags = stats.lags
        return {
            "requests": requests,
            "cpu": time.process_time(),
            "lag_samples": len(lags),
            "lag_p50_ms": _ms(_percentile(lags, 0.5)),
            "lag_p99_ms": _ms(_percentile(lags, 0.99)),
        }

    return app


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def _no_flush() -> None:
    return None


def main(argv: list[str] | None = None) -> int:
    """Serve the app for MODE on a free loopback port; print the URL first."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--collector", required=True)
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # Listening before uvicorn starts: a client that connects early waits in the backlog.
    sock.listen(1024)
    config = uvicorn.Config(
        build_app(args.mode, args.collector),
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
