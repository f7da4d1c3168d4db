"""A HeyGen-like plain REST API, for the REST wrappers' tests (test helper)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._serve import FakeService

__all__ = ["DEFAULT_SESSIONS", "FakeHeyGen"]

DEFAULT_SESSIONS: tuple[dict[str, Any], ...] = (
    {"session_id": "session-1", "duration": 12},
    {"session_id": "session-2", "duration": 20},
)
"""The two sessions of seed 004's example."""


class FakeHeyGen(FakeService):
    """Answers ``GET /v2/streaming.list`` with ``{"data": ..., "sessions": [...]}`` (seed 004).

    ``routes`` maps ``"METHOD /path"`` to ``(status, json_body)``; change it (or
    ``sessions``) between tests to answer differently. Unknown routes get a 404. Every
    request is recorded in ``requests`` as ``{"method", "path", "query", "json"}``.
    """

    def __init__(
        self,
        *,
        sessions: Any = DEFAULT_SESSIONS,
        routes: Mapping[str, tuple[int, Any]] | None = None,
    ) -> None:
        self.sessions = [dict(s) for s in sessions]
        self.routes: dict[str, tuple[int, Any]] = dict(routes or {})
        super().__init__()

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{path:path}", self._any, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
            ]
        )

    def streaming_list_body(self) -> dict[str, Any]:
        """The body of ``GET /v2/streaming.list`` for the current ``sessions``."""
        return {
            "code": 100,
            "message": "success",
            "data": {"total": len(self.sessions)},
            "sessions": copy.deepcopy(self.sessions),
        }

    async def _any(self, request: Request) -> Response:
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = await request.json()
            except ValueError:
                body = raw.decode("utf-8", "replace")
        path = request.url.path
        self.requests.append(
            {
                "method": request.method,
                "path": path,
                "query": dict(request.query_params),
                "json": body,
            }
        )
        key = f"{request.method} {path}"
        if key in self.routes:
            status, answer = self.routes[key]
            return JSONResponse(answer, status_code=status)
        if key == "GET /v2/streaming.list":
            return JSONResponse(self.streaming_list_body())
        return JSONResponse({"code": 404, "message": f"no route {key}"}, status_code=404)
