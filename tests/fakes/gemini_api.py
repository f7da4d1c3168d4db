"""A fake of the Gemini API (``generateContent``, ``streamGenerateContent``) that the real
``google-genai`` client parses (test helper)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ._serve import FAIL_MODEL, FakeService

__all__ = ["FakeGemini"]


class FakeGemini(FakeService):
    """``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``.

    Point ``genai.Client(api_key="t", http_options=types.HttpOptions(base_url=fake.url))``
    at it. Every answer names ``modelVersion`` (the model asked for, with a ``-001`` suffix,
    as the real API names versions) and a ``responseId``; a stream sends one chunk per piece,
    each with the usage so far, the last with the whole usage and ``finishReason``.
    """

    def __init__(
        self,
        *,
        pieces: Sequence[str] = ("Hello", " from", " the", " fake", " Gemini"),
        prompt_tokens: int = 9,
        output_tokens: int = 5,
        thoughts_tokens: int = 3,
    ) -> None:
        self.pieces = tuple(pieces)
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.thoughts_tokens = thoughts_tokens
        super().__init__()

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route("/{version}/models/{call}", self._call, methods=["POST"])])

    def usage(self, output_tokens: int | None = None) -> dict[str, Any]:
        """The ``usageMetadata`` of an answer (``output_tokens`` so far, for a stream)."""
        out = self.output_tokens if output_tokens is None else output_tokens
        return {
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": out,
            "thoughtsTokenCount": self.thoughts_tokens,
            "totalTokenCount": self.prompt_tokens + out + self.thoughts_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens}],
        }

    def _answer(
        self, model: str, response_id: str, text: str, usage: dict[str, Any], done: bool
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": [{"text": text}]},
            "index": 0,
        }
        if done:
            candidate["finishReason"] = "STOP"
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": f"{model}-001",
            "responseId": response_id,
        }

    async def _call(self, request: Request) -> Response:
        model, _, method = request.path_params["call"].partition(":")
        self.requests.append(await request.json())
        if model == FAIL_MODEL:
            return JSONResponse(
                {"error": {"code": 404, "message": f"models/{model} is not found",
                           "status": "NOT_FOUND"}},
                status_code=404,
            )  # fmt: skip
        response_id = uuid.uuid4().hex[:20]
        if method == "generateContent":
            text = "".join(self.pieces)
            return JSONResponse(self._answer(model, response_id, text, self.usage(), True))
        if method == "streamGenerateContent":
            return StreamingResponse(
                self._chunks(model, response_id), media_type="text/event-stream"
            )
        return JSONResponse({"error": {"code": 404, "message": method}}, status_code=404)

    async def _chunks(self, model: str, response_id: str) -> AsyncIterator[str]:
        last = len(self.pieces) - 1
        for i, piece in enumerate(self.pieces):
            # The real API reports the output so far on every chunk; the last one is the total.
            out = self.output_tokens if i == last else min(i + 1, self.output_tokens)
            answer = self._answer(model, response_id, piece, self.usage(out), i == last)
            yield f"data: {json.dumps(answer)}\r\n\r\n"
