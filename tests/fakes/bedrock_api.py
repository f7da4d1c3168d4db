"""A fake of Amazon Bedrock's runtime ``Converse`` and ``ConverseStream`` that the real boto3
``bedrock-runtime`` client parses (test helper).

``ConverseStream`` answers in the AWS event-stream binary framing
(``application/vnd.amazon.eventstream``): each message is a prelude (total and header
lengths) with its CRC32, headers (``:event-type``, ``:content-type``, ``:message-type``),
a JSON payload, and the CRC32 of the whole message. botocore ships the decoder only, so
the encoder is here; the Bedrock tests read every stream through boto3's own decoder.
"""

from __future__ import annotations

import binascii
import json
import struct
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._serve import FAIL_MODEL, FakeService

__all__ = ["FakeBedrock", "encode_event"]

_STRING = 7  # the event-stream header value type of a UTF-8 string


def _header(name: str, value: str) -> bytes:
    key = name.encode()
    data = value.encode()
    return struct.pack("!B", len(key)) + key + struct.pack("!BH", _STRING, len(data)) + data


def encode_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """One event-stream message carrying ``payload`` as the event ``event_type``."""
    headers = (
        _header(":event-type", event_type)
        + _header(":content-type", "application/json")
        + _header(":message-type", "event")
    )
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack("!II", total, len(headers))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + headers + body
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


class FakeBedrock(FakeService):
    """``POST /model/{modelId}/converse`` and ``/converse-stream``, as Bedrock answers them.

    Point ``boto3.client("bedrock-runtime", endpoint_url=fake.url, region_name="us-east-1",
    aws_access_key_id="x", aws_secret_access_key="x")`` at it. Answers carry neither the
    model nor an id, as the real ones: the request id is the ``x-amzn-RequestId`` header.
    A stream sends ``messageStart``, one ``contentBlockDelta`` per piece,
    ``contentBlockStop``, ``messageStop`` and ``metadata`` (the usage).
    """

    def __init__(
        self,
        *,
        pieces: Sequence[str] = ("Hello", " from", " the", " fake", " Bedrock"),
        input_tokens: int = 11,
        output_tokens: int = 6,
        cache_read_tokens: int = 4,
    ) -> None:
        self.pieces = tuple(pieces)
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cache_read_tokens = cache_read_tokens
        self.request_ids: list[str] = []
        super().__init__()

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/model/{model:path}/converse", self._converse, methods=["POST"]),
                Route("/model/{model:path}/converse-stream", self._stream, methods=["POST"]),
            ]
        )

    def usage(self) -> dict[str, Any]:
        """The ``usage`` of every answer."""
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "totalTokens": self.input_tokens + self.output_tokens + self.cache_read_tokens,
            "cacheReadInputTokens": self.cache_read_tokens,
            "cacheWriteInputTokens": 0,
        }

    def _request_id(self) -> str:
        rid = str(uuid.uuid4())
        self.request_ids.append(rid)
        return rid

    async def _check(self, request: Request) -> Response | None:
        self.requests.append(json.loads(await request.body() or b"{}"))
        if request.path_params["model"] == FAIL_MODEL:
            return JSONResponse(
                {"message": "The provided model identifier is invalid."},
                status_code=400,
                headers={"x-amzn-ErrorType": "ValidationException:http://internal.amazon.com/"},
            )
        return None

    async def _converse(self, request: Request) -> Response:
        failed = await self._check(request)
        if failed is not None:
            return failed
        body = {
            "output": {
                "message": {"role": "assistant", "content": [{"text": "".join(self.pieces)}]}
            },
            "stopReason": "end_turn",
            "usage": self.usage(),
            "metrics": {"latencyMs": 7},
        }
        return JSONResponse(body, headers={"x-amzn-RequestId": self._request_id()})

    async def _stream(self, request: Request) -> Response:
        failed = await self._check(request)
        if failed is not None:
            return failed
        events = [encode_event("messageStart", {"role": "assistant"})]
        events += [
            encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
            for piece in self.pieces
        ]
        events += [
            encode_event("contentBlockStop", {"contentBlockIndex": 0}),
            encode_event("messageStop", {"stopReason": "end_turn"}),
            encode_event("metadata", {"usage": self.usage(), "metrics": {"latencyMs": 7}}),
        ]
        return Response(
            b"".join(events),
            media_type="application/vnd.amazon.eventstream",
            headers={"x-amzn-RequestId": self._request_id()},
        )
