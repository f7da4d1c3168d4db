"""The collector's web app (layer 6): Starlette routes around ``Collector``, faults applied here.

``/api/v1/...`` serves the wire contract (faults and the API-key check apply there);
``/_collector/...`` is the admin surface for tests and tools (never faulted, no key).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from aicm._core.jsonplain import loads
from aicm._core.wire import Kind
from aicm.collector._api_requests import answer_response, json_response
from aicm.collector._collector import Collector, CollectorOptions
from aicm.collector._faults import Faults, RequestFaults, faults_from_mapping, faults_to_json
from aicm.collector._limits import LimitError
from aicm.collector._service_api import service_api_routes
from aicm.collector._store import kind_from_name

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["API_URL", "build_app", "create_app"]

#: Where the wire contract is served: the SDK's ``api_url``.
API_URL = "/api/v1"
#: Bodies larger than this are refused (413) before they are read whole.
MAX_BODY_BYTES = 64 * 1024 * 1024

_UNCOMPLETED = "ASGI callable returned without completing response."
# Set in the task that drops a connection on purpose, so its uvicorn error line is hushed.
_dropping: contextvars.ContextVar[bool] = contextvars.ContextVar("aicm_dropping", default=False)


class _HushDeliberateDrops(logging.Filter):
    """Drop uvicorn's 'returned without completing response' line for injected drops only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == _UNCOMPLETED and _dropping.get())


_HUSH = _HushDeliberateDrops()


def _hush_deliberate_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _HUSH not in logger.filters:
        logger.addFilter(_HUSH)


class _DroppedResponse(Response):
    """Starts an answer that promises more bytes than it sends, then lets go of it.

    uvicorn closes the connection of an app that returns mid-response, so the client
    reads a truncated body and raises a transport error (httpx: ``RemoteProtocolError``).
    """

    def __init__(self, status_code: int) -> None:
        super().__init__(status_code=status_code)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _dropping.set(True)
        partial = b'{"results": ['
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"4096"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": partial, "more_body": True})


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Endpoints:
    """The route handlers, bound to one ``Collector``."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def _begin(
        self, request: Request, endpoint: str
    ) -> tuple[RequestFaults, Response | None]:
        """Count the request and apply the faults that come before any work."""
        collector = self.collector
        if endpoint == "triggered_limits":
            # Every tracker asks this once as it starts: injected failures, drops and
            # latency (and fail_first's count) are kept for the requests they test.
            plan = RequestFaults(faults=attrs.evolve(collector.faults.faults, latency=0.0))
        else:
            plan = collector.faults.plan()
        headers = request.headers
        refusal = await collector.admit(
            plan, headers.get("authorization"), headers.get("user-agent")
        )
        if refusal is not None:
            return plan, self._done(endpoint, answer_response(refusal))
        return plan, None

    def _done(self, endpoint: str, response: Response) -> Response:
        self.collector.stats.answered(endpoint, response.status_code)
        return response

    def _drop(self, endpoint: str, status_code: int) -> Response:
        self.collector.stats.fault("drop")
        self.collector.stats.answered(endpoint, "dropped")
        return _DroppedResponse(status_code)

    async def _ingest(self, request: Request, kind: Kind) -> Response:
        body = await _read_body(request)
        plan, refused = await self._begin(request, kind)
        if refused is not None:
            return refused
        faults = plan.faults
        if plan.drop and not faults.drop_after_store:
            return self._drop(kind, 202)
        answer = await self.collector.ingest(
            kind,
            body,
            user_agent=request.headers.get("user-agent"),
            faults=faults,
            authorization=request.headers.get("authorization"),
        )
        if plan.drop:
            return self._drop(kind, answer.status_code)
        return self._done(kind, answer_response(answer))

    async def track(self, request: Request) -> Response:
        """``POST /api/v1/track``."""
        return await self._ingest(request, "track")

    async def track_usage(self, request: Request) -> Response:
        """``POST /api/v1/track-usage``."""
        return await self._ingest(request, "track_usage")

    async def configs(self, request: Request) -> Response:
        """``GET /api/v1/configs``."""
        plan, refused = await self._begin(request, "configs")
        if refused is not None:
            return refused
        if plan.drop:
            return self._drop("configs", 200)
        answer = self.collector.configs_answer(
            request.query_params.get("api_id"), request.headers.get("if-none-match")
        )
        return self._done("configs", answer_response(answer))

    # -- usage limits (the service's API) -----------------------------------------------

    async def _limits_begin(self, request: Request, endpoint: str) -> Response | None:
        plan, refused = await self._begin(request, endpoint)
        if refused is not None:
            return refused
        if plan.drop:
            return self._drop(endpoint, 200)
        return None

    async def _limit_body(self, request: Request) -> Any:
        try:
            return loads(await _read_body(request) or b"{}")
        except ValueError as exc:
            raise LimitError(f"request body is not valid JSON: {exc}") from None

    async def usage_limits(self, request: Request) -> Response:
        """``GET`` the usage limits; ``POST`` a new one (201)."""
        refused = await self._limits_begin(request, "usage_limits")
        if refused is not None:
            return refused
        book = self.collector.limits
        if request.method == "GET":
            return self._done("usage_limits", json_response([x.out() for x in book.all()]))
        try:
            limit = book.create(await self._limit_body(request))
        except LimitError as exc:
            return self._done("usage_limits", json_response({"detail": str(exc)}, 400))
        return self._done("usage_limits", json_response(limit.out(), 201))

    async def usage_limit(self, request: Request) -> Response:
        """``GET``, ``PUT`` (the fields given) or ``DELETE`` one usage limit."""
        refused = await self._limits_begin(request, "usage_limits")
        if refused is not None:
            return refused
        book = self.collector.limits
        uid = str(request.path_params["limit_id"])
        missing = json_response({"detail": f"no usage limit {uid!r}"}, 404)
        if request.method == "GET":
            limit = book.get(uid)
            answer = missing if limit is None else json_response(limit.out())
        elif request.method == "DELETE":
            answer = Response(status_code=204) if book.delete(uid) else missing
        else:
            try:
                changed = book.update(uid, await self._limit_body(request))
            except LimitError as exc:
                return self._done("usage_limits", json_response({"detail": str(exc)}, 400))
            answer = missing if changed is None else json_response(changed.out())
        return self._done("usage_limits", answer)

    async def usage_limits_progress(self, request: Request) -> Response:
        """``GET /usage-limits/progress/``: each limit with its period's spend."""
        refused = await self._limits_begin(request, "usage_limits")
        if refused is not None:
            return refused
        return self._done("usage_limits", json_response(self.collector.limits_progress()))

    async def triggered_limits(self, request: Request) -> Response:
        """``GET /triggered-limits``: ``{"triggered_limits": {...}}`` for the caller's key."""
        refused = await self._limits_begin(request, "triggered_limits")
        if refused is not None:
            return refused
        plan = self.collector.faults.faults
        envelope = self.collector.triggered_limits(
            request.headers.get("authorization"), forged=plan.forge_limits
        )
        return self._done("triggered_limits", json_response({"triggered_limits": envelope}))

    # -- admin -------------------------------------------------------------------------

    async def admin_public_key(self, request: Request) -> Response:
        """``GET /_collector/public-key``: the key the collector signs usage limits with."""
        key = self.collector.signing_key
        return json_response({"key_id": key.key_id, "public_key": key.public_pem})

    async def admin_records(self, request: Request) -> Response:
        """``GET /_collector/records?kind=track|track_usage``."""
        try:
            kind = kind_from_name(request.query_params.get("kind", ""))
        except ValueError as exc:
            return json_response({"detail": str(exc)}, 400)
        records = self.collector.store.records(kind)
        return json_response({"kind": kind, "count": len(records), "records": records})

    async def admin_stats(self, request: Request) -> Response:
        """``GET /_collector/stats``."""
        return json_response(self.collector.stats.snapshot())

    async def admin_faults(self, request: Request) -> Response:
        """``GET`` the faults in force; ``POST`` a JSON object of ``Faults`` fields: new ones."""
        if request.method == "POST":
            try:
                data = loads(await request.body() or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object of Faults fields")
                faults = faults_from_mapping(data)
            except ValueError as exc:
                return json_response({"detail": str(exc)}, 400)
            self.collector.faults.set(faults)
        return json_response(faults_to_json(self.collector.faults.faults))

    async def admin_configs(self, request: Request) -> Response:
        """``GET`` the configs served; ``POST`` new ones (an object or a bare list)."""
        if request.method == "POST":
            try:
                self.collector.set_configs(loads(await request.body()))
            except ValueError as exc:
                return json_response({"detail": str(exc)}, 400)
        return json_response({"service_configs": self.collector.configs()})

    async def admin_clear(self, request: Request) -> Response:
        """``POST /_collector/clear``: forget records, statistics and usage limits."""
        self.collector.clear()
        return json_response({"cleared": True})

    async def admin_health(self, request: Request) -> Response:
        """``GET /_collector/health``: the collector is up."""
        return json_response({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = json_response({"detail": exc.detail}, exc.status_code)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def build_app(collector: Collector, *, owns_collector: bool = False) -> Starlette:
    """The Starlette app serving ``collector``; closes it at shutdown if it owns it."""
    _hush_deliberate_drops()
    e = _Endpoints(collector)
    routes = [
        Route(f"{API_URL}/track", e.track, methods=["POST"]),
        Route(f"{API_URL}/track-usage", e.track_usage, methods=["POST"]),
        Route(f"{API_URL}/configs", e.configs, methods=["GET"]),
        Route(f"{API_URL}/usage-limits/", e.usage_limits, methods=["GET", "POST"]),
        Route(f"{API_URL}/usage-limits/progress/", e.usage_limits_progress, methods=["GET"]),
        Route(
            f"{API_URL}/usage-limits/{{limit_id}}/", e.usage_limit, methods=["GET", "PUT", "DELETE"]
        ),
        Route(f"{API_URL}/triggered-limits", e.triggered_limits, methods=["GET"]),
        Route(f"{API_URL}/triggered-limits/", e.triggered_limits, methods=["GET"]),
        Route("/_collector/public-key", e.admin_public_key, methods=["GET"]),
        Route("/_collector/records", e.admin_records, methods=["GET"]),
        Route("/_collector/stats", e.admin_stats, methods=["GET"]),
        Route("/_collector/faults", e.admin_faults, methods=["GET", "POST"]),
        Route("/_collector/configs", e.admin_configs, methods=["GET", "POST"]),
        Route("/_collector/clear", e.admin_clear, methods=["POST"]),
        Route("/_collector/health", e.admin_health, methods=["GET"]),
    ]
    # The service's management API (usage, costs, customers, ...): its own module.
    routes += service_api_routes(API_URL, collector)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owns_collector:
                collector.close()

    app = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=lifespan
    )
    app.state.collector = collector
    return app


def create_app(
    *, faults: Faults | Mapping[str, Any] | None = None, **options: Unpack[CollectorOptions]
) -> Starlette:
    """An ASGI app of a new collector, for any ASGI server.

    The collector (its store, faults and configs) lives as long as the app and is closed
    by the app's lifespan shutdown. ``data_dir`` holds its signing key and usage limits
    (None: a temporary directory, removed at shutdown).
    ``uvicorn --factory aicm.collector:create_app`` works.
    """
    if faults is not None and not isinstance(faults, Faults):
        faults = faults_from_mapping(faults)
    collector = Collector(faults=faults, **options)
    return build_app(collector, owns_collector=True)
