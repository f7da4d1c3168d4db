"""A fake of the Anthropic Messages API that the real ``anthropic`` clients parse (test helper)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ._serve import FAIL_MODEL, FakeService

__all__ = ["FakeAnthropic"]


class FakeAnthropic(FakeService):
    """``POST /v1/messages``: a ``Message`` with ``usage``, or its SSE event stream.

    Point ``anthropic.Anthropic(base_url=fake.url, api_key="test")`` at it. A stream sends,
    like the real API: ``message_start`` (input tokens, output tokens 1),
    ``content_block_start``, a ``ping``, one ``content_block_delta`` per piece,
    ``content_block_stop``, ``message_delta`` (stop reason, cumulative output tokens) and
    ``message_stop``.
    """

    def __init__(
        self,
        *,
        pieces: Sequence[str] = ("Hello", " from", " the", " fake", " Claude"),
        input_tokens: int = 25,
        output_tokens: int = 15,
        cache_read_input_tokens: int = 0,
    ) -> None:
        self.pieces = tuple(pieces)
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cache_read_input_tokens = cache_read_input_tokens
        super().__init__()

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    def _usage(self, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "service_tier": "standard",
        }

    def _message(self, message_id: str, model: str, *, final: bool) -> dict[str, Any]:
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "".join(self.pieces)}] if final else [],
            "stop_reason": "end_turn" if final else None,
            "stop_sequence": None,
            "usage": self._usage(self.output_tokens if final else 1),
        }

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        model = body.get("model", "claude-fake")
        if model == FAIL_MODEL or "messages" not in body or "max_tokens" not in body:
            return JSONResponse(
                {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": f"model: {model}"},
                },
                status_code=400,
            )
        message_id = f"msg_fake_{self.next_id()}"
        if body.get("stream"):
            return StreamingResponse(
                self._events(message_id, model), media_type="text/event-stream"
            )
        return JSONResponse(self._message(message_id, model, final=True))

    async def _events(self, message_id: str, model: str) -> AsyncIterator[str]:
        def event(name: str, data: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n"

        yield event(
            "message_start",
            {"type": "message_start", "message": self._message(message_id, model, final=False)},
        )
        yield event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        yield event("ping", {"type": "ping"})
        for piece in self.pieces:
            yield event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": self.output_tokens},
            },
        )
        yield event("message_stop", {"type": "message_stop"})
