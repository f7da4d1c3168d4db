"""A fake of the OpenAI chat completions API that the real ``openai`` clients parse (tests)."""

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
    """``POST /v1/chat/completions``: JSON with a ``usage`` block, or SSE with ``stream: true``.

    Point ``openai.OpenAI(base_url=fake.base_url, api_key="test")`` at it. The reply's text is
    ``"".join(pieces)``; a stream sends one chunk per piece, a final chunk with the finish
    reason, then (with ``stream_options.include_usage``) a chunk with no choices and the
    usage, then ``data: [DONE]``.
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
        return Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        model = body.get("model", "gpt-fake")
        if model == FAIL_MODEL or "messages" not in body:
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
