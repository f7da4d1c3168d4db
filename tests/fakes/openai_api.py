"""A fake of the OpenAI chat completions and Responses APIs, parsed by the real ``openai``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ._serve import FAIL_MODEL, FakeService

__all__ = ["FakeOpenAI"]


class FakeOpenAI(FakeService):
    """``POST /v1/chat/completions`` and ``POST /v1/responses``: JSON, or SSE with ``stream``.

    Point ``openai.OpenAI(base_url=fake.base_url, api_key="test")`` at it. The reply's text is
    ``"".join(pieces)``. A chat stream sends one chunk per piece, a final chunk with the
    finish reason, then (with ``stream_options.include_usage``) a chunk with no choices and
    the usage, then ``data: [DONE]``. A Responses stream sends, as the real API does,
    ``response.created`` and ``response.in_progress`` (no usage), the output item and
    content part events, one ``response.output_text.delta`` per piece, the done events, and
    ``response.completed`` with the whole response and its usage (``prompt_tokens`` in,
    ``completion_tokens`` out).
    """

    def __init__(
        self,
        *,
        pieces: Sequence[str] = ("Hello", " from", " the", " fake", " OpenAI"),
        prompt_tokens: int = 12,
        completion_tokens: int = 5,
        cached_tokens: int = 0,
    ) -> None:
        self.pieces = tuple(pieces)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cached_tokens = cached_tokens
        super().__init__()

    @property
    def base_url(self) -> str:
        """What to pass as the openai client's ``base_url``."""
        return f"{self.url}/v1"

    def usage(self) -> dict[str, Any]:
        """The usage block every answer carries."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/responses", self._responses, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                # Azure OpenAI names the deployment in the path.
                Route(
                    "/v1/deployments/{deployment}/chat/completions", self._chat, methods=["POST"]
                ),
            ]
        )

    def responses_usage(self) -> dict[str, Any]:
        """The usage block of a Responses API answer."""
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    @staticmethod
    def _error(model: str) -> JSONResponse:
        return JSONResponse(
            {
                "error": {
                    "message": f"The model `{model}` does not exist",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            },
            status_code=400,
        )

    def _response(
        self, response_id: str, model: str, created: int, *, done: bool
    ) -> dict[str, Any]:
        text = "".join(self.pieces)
        message = {
            "id": f"msg-{response_id}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }
        return {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": "completed" if done else "in_progress",
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "model": model,
            "output": [message] if done else [],
            "parallel_tool_calls": True,
            "temperature": 1.0,
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "usage": self.responses_usage() if done else None,
        }

    async def _responses(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        model = body.get("model", "gpt-fake")
        if model == FAIL_MODEL or "input" not in body:
            return self._error(model)
        response_id = f"resp-fake-{self.next_id()}"
        created = int(time.time())
        if body.get("stream"):
            return StreamingResponse(
                self._response_events(response_id, model, created),
                media_type="text/event-stream",
            )
        return JSONResponse(self._response(response_id, model, created, done=True))

    async def _response_events(
        self, response_id: str, model: str, created: int
    ) -> AsyncIterator[str]:
        sequence = 0
        item_id = f"msg-{response_id}"

        def event(kind: str, **data: Any) -> str:
            nonlocal sequence
            sequence += 1
            payload = {"type": kind, "sequence_number": sequence, **data}
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        text = "".join(self.pieces)
        started = self._response(response_id, model, created, done=False)
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant"}
        yield event("response.output_item.added", output_index=0, item={**item, "content": []})
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        yield event("response.content_part.added", **where, part=part)
        for piece in self.pieces:
            yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
        yield event("response.output_text.done", **where, text=text, logprobs=[])
        yield event("response.content_part.done", **where, part={**part, "text": text})
        final = self._response(response_id, model, created, done=True)
        yield event("response.output_item.done", output_index=0, item=final["output"][0])
        yield event("response.completed", response=final)

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.25, -0.5, 0.125]}
                    for i in range(count)
                ],
                "model": body.get("model"),
                "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens},
            }
        )

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        model = body.get("model", "gpt-fake")
        if model == FAIL_MODEL or "messages" not in body:
            return self._error(model)
        completion_id = f"chatcmpl-fake-{self.next_id()}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._chunks(completion_id, created, model, include_usage),
                media_type="text/event-stream",
            )
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(self.pieces),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": self.usage(),
                "service_tier": "default",
            }
        )

    async def _chunks(
        self, completion_id: str, created: int, model: str, include_usage: bool
    ) -> AsyncIterator[str]:
        def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "service_tier": "default",
                "choices": choices,
            }
            if include_usage:
                # The real API sends "usage": null on every chunk but the last when asked.
                data["usage"] = usage
            return f"data: {json.dumps(data)}\n\n"

        def delta(content: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}

        yield chunk([delta({"role": "assistant", "content": "", "refusal": None})])
        for piece in self.pieces:
            yield chunk([delta({"content": piece})])
        yield chunk([delta({}, "stop")])
        if include_usage:
            yield chunk([], self.usage())
        yield "data: [DONE]\n\n"
