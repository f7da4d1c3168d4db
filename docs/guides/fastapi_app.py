"""A FastAPI app that records each request's LLM usage with one AsyncTracker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

import aicm


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One tracker for the app's lifetime: its delivery actor runs in this task group,
    # and leaving the block (shutdown) delivers whatever is still queued.
    async with aicm.AsyncTracker(delivery_type="mem_queue") as tracker:
        app.state.tracker = tracker
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/summarise")
async def summarise(request: Request, customer: str) -> dict[str, str]:
    usage = {"input_tokens": 812, "output_tokens": 96}  # what your LLM call reported
    tracker: aicm.AsyncTracker = request.app.state.tracker
    await tracker.track("openai", "gpt-5-mini", usage, client_customer_key=customer)  # ~µs
    return {"summary": "..."}
