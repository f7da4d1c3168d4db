"""AsyncCostManagerClient against a scripted loopback server: a whole-request deadline that
stops a trickled answer, 3xx answers refused as a misconfigured api_base, bad /configs."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

from aicm import (
    APIStatusError,
    AsyncCostManagerClient,
    AsyncTracker,
    ConfigError,
    CostManagerClient,
    ServiceRedirectError,
    TransportError,
)
from aicm._core.policy import Outcome, classify_status
from aicm._io.http import REQUEST_DEADLINE_FACTOR

KEY = "test-key-0123456789abcdef"
RECORD = {"api_id": "openai", "service_key": "openai::gpt-4o", "payload": {"n": 1}}
ACCEPTED = json.dumps({"results": [], "triggered_limits": {}}).encode()
# Header bytes that never end: sent one at a time, each well within the read timeout.
TRICKLE = b"HTTP/1.1 202 Accepted\r\nX-Pad: " + b"a" * 10_000

Answer = Callable[[str, str], tuple[int, dict[str, str], bytes]]


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 answering each request with ``answer(method, path)``;
    ``trickle`` seconds: instead it sends :data:`TRICKLE` a byte at a time."""

    def __init__(self) -> None:
        self.answer: Answer = lambda method, path: (202, {}, ACCEPTED)
        self.trickle = 0.0
        self.seen: list[tuple[str, str]] = []
        self.bodies: list[bytes] = []  # of every POST, in order
        self.hung_up = threading.Event()  # the client closed a trickled connection
        self.stop = threading.Event()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                """Quiet."""

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.command == "POST":  # not a tracker's GET /triggered-limits at start
                    scripted.bodies.append(body)
                scripted.seen.append((self.command, self.path))
                if scripted.trickle:
                    self._trickle()
                    return
                status, headers, body = scripted.answer(self.command, self.path)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _trickle(self) -> None:
                self.close_connection = True
                try:
                    for byte in TRICKLE:
                        if scripted.stop.wait(scripted.trickle):
                            return
                        self.wfile.write(bytes([byte]))
                except OSError:
                    scripted.hung_up.set()

            do_GET = do_POST = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    """A scripted server answering 202 until told otherwise."""
    scripted = ScriptedServer()
    try:
        yield scripted
    finally:
        scripted.close()


def redirect(status: int, location: str | None) -> Answer:
    """An answer function: ``status`` with ``location`` for /api/v1/...; 202 elsewhere."""

    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if not path.startswith("/api/v1/"):
            return 202, {}, ACCEPTED
        headers = {} if location is None else {"Location": location}
        return status, headers, b"moved"

    return answer


# -- the whole-request deadline ----------------------------------------------------------------


@pytest.mark.anyio
async def test_a_trickled_answer_is_cut_at_the_deadline(server: ScriptedServer) -> None:
    """A trickled answer raises TransportError at timeout x factor, and the connection is closed."""
    server.trickle = 0.05
    timeout = 0.3
    deadline = timeout * REQUEST_DEADLINE_FACTOR
    async with AsyncCostManagerClient(
        aicm_api_key=KEY, aicm_api_base=server.base, timeout=timeout
    ) as client:
        started = time.monotonic()
        with pytest.raises(TransportError, match=rf"took longer than {deadline:g} s") as info:
            await client.track([RECORD])
        took = time.monotonic() - started
        assert deadline <= took < deadline + 1.0
        assert isinstance(info.value, ConnectionError)
        assert server.base + "/api/v1/track" in str(info.value)
        # Not left half-read in the pool: the server sees the client hang up...
        assert await anyio.to_thread.run_sync(server.hung_up.wait, 5.0)
        # ...and the same client carries on over a fresh connection.
        server.trickle = 0.0
        assert (await client.track([RECORD])).results == ()


@pytest.mark.anyio
async def test_an_outer_cancellation_stays_a_cancellation(server: ScriptedServer) -> None:
    """The caller's own deadline, shorter than ours, cancels the request: no TransportError."""
    server.trickle = 0.05
    async with AsyncCostManagerClient(
        aicm_api_key=KEY, aicm_api_base=server.base, timeout=2.0
    ) as client:
        started = time.monotonic()
        with anyio.move_on_after(0.3) as scope:
            await client.track([RECORD])
        assert scope.cancelled_caught
        assert time.monotonic() - started < 2.0


def test_the_sync_client_inherits_the_deadline(server: ScriptedServer) -> None:
    """CostManagerClient (a portal over the async client) stops a trickled answer too."""
    server.trickle = 0.05
    with CostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(TransportError, match="took longer than"):
            client.track([RECORD])
    assert time.monotonic() - started < 2.0


# -- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [300, 301, 302, 303, 307, 308])
def test_a_redirect_status_means_a_misconfigured_api_base(status: int) -> None:
    """Every 3xx is MISCONFIGURED: no record is at fault, none may be dead-lettered."""
    assert classify_status(status).outcome is Outcome.MISCONFIGURED
    assert classify_status(status, "5").outcome is Outcome.MISCONFIGURED


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirected_track_raises_naming_the_location(
    server: ScriptedServer, status: int
) -> None:
    """A 3xx to POST /track raises ServiceRedirectError naming Location; it is not followed."""
    location = f"{server.base}/moved/api/v1/track"
    server.answer = redirect(status, location)
    async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base) as client:
        with pytest.raises(ServiceRedirectError) as info:
            await client.track([RECORD])
    error = info.value
    assert isinstance(error, APIStatusError)
    assert (error.status_code, error.location) == (status, location)
    assert location in str(error)
    assert "aicm_api_base / AICM_API_BASE" in str(error)
    assert server.seen == [("POST", "/api/v1/track")]  # never resent, as POST or GET


@pytest.mark.anyio
async def test_an_http_to_https_redirect_suggests_the_new_base(server: ScriptedServer) -> None:
    """The usual redirect (http -> https, same path) names the api_base to set instead."""
    https_base = server.base.replace("http://", "https://")
    server.answer = redirect(301, f"{https_base}/api/v1/track-usage")
    async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base) as client:
        with pytest.raises(
            ServiceRedirectError, match=re.escape(f"probably '{https_base}'")
        ) as info:
            await client.track_usage(
                [{"config_id": "c", "service_id": "s", "usage": {"n": 1}, "response_id": "r"}]
            )
    assert f"(now '{server.base}')" in str(info.value)


@pytest.mark.anyio
async def test_a_relative_location_is_resolved(server: ScriptedServer) -> None:
    """A relative Location is named as the absolute URL it points to."""
    server.answer = redirect(308, "/v2/track")
    async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base) as client:
        with pytest.raises(
            ServiceRedirectError, match=re.escape(f"'{server.base}/v2/track'")
        ) as info:
            await client.track([RECORD])
    assert info.value.location == "/v2/track"


@pytest.mark.anyio
async def test_a_redirect_without_location_still_says_what_to_fix(server: ScriptedServer) -> None:
    """A 3xx with no Location header raises ServiceRedirectError saying so."""
    server.answer = redirect(302, None)
    async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base) as client:
        with pytest.raises(ServiceRedirectError, match="without a Location header") as info:
            await client.get_configs()
    assert info.value.location is None
    assert "AICM_API_BASE" in str(info.value)


@pytest.mark.anyio
async def test_a_redirected_get_configs_raises_too(server: ScriptedServer) -> None:
    """GET /configs answered 301 raises ServiceRedirectError, not a malformed-answer error."""
    server.answer = redirect(301, "https://elsewhere.example/api/v1/configs")
    async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base) as client:
        with pytest.raises(ServiceRedirectError, match=r"elsewhere\.example"):
            await client.get_configs("openai")
    assert server.seen == [("GET", "/api/v1/configs?api_id=openai")]


@pytest.mark.anyio
async def test_a_304_with_a_cached_answer_is_still_the_cached_answer(
    server: ScriptedServer,
) -> None:
    """ETag revalidation keeps working: 304 to a conditional GET /configs is the cached value."""
    configs = {"service_configs": [{"config_id": "c", "api_id": "a"}], "triggered_limits": {}}

    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if len(server.seen) == 1:
            return (
                200,
                {"ETag": '"v1"', "Content-Type": "application/json"},
                json.dumps(configs).encode(),
            )
        return 304, {"ETag": '"v1"'}, b""

    server.answer = answer
    async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base) as client:
        first = await client.get_configs()
        assert await client.get_configs() is first
    assert [c.config_id for c in first.service_configs] == ["c"]


# -- malformed /configs answers ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            {"service_configs": [{"config_id": "c", "api_id": "a", "handling_config": "x"}]},
            "service_configs[0].handling_config: expected an object, got str",
        ),
        ({"service_configs": "none"}, "service_configs: expected a list, got str"),
        ([], "expected an object, got list"),
        (
            {"service_configs": [{"api_id": "a"}, {"config_id": 7, "api_id": "b"}]},
            "service_configs[0].config_id: required field missing; "
            "service_configs[1].config_id: expected a string, got int",
        ),
    ],
)
async def test_a_malformed_configs_answer_names_the_fields(
    server: ScriptedServer, body: Any, named: str
) -> None:
    """A /configs answer of the wrong shape raises ConfigError naming every path at fault."""
    server.answer = lambda method, path: (200, {}, json.dumps(body).encode())
    async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base) as client:
        with pytest.raises(ConfigError) as info:
            await client.get_configs()
    assert str(info.value) == f"the service's /configs answer is malformed: {named}"


# -- a 2xx answer whose results make no sense --------------------------------------------------

# Seen from fuzzing: results of the wrong JSON types, "status" a list among them.
ODD_RESULTS = [
    {"response_id": None, "errors": None, "status": []},
    {"response_id": ["x"], "status": {"a": 1}, "errors": {"b": 2}},
    {"response_id": "r", "status": 3, "errors": "e"},
    "not an object",
]


@pytest.mark.anyio
@pytest.mark.parametrize("delivery_type", ["mem_queue", "persistent_queue"])
async def test_a_2xx_answer_with_odd_results_is_delivered_once(
    server: ScriptedServer, delivery_type: str, tmp_path: Any
) -> None:
    """A 2xx answer is delivered whatever its results say: the records are sent once, the
    actor stays alive with no error, and nothing is dead-lettered or sent again."""
    server.answer = lambda method, path: (
        200,
        {"Content-Type": "application/json"},
        json.dumps({"results": ODD_RESULTS}).encode(),
    )
    ids = [f"odd-{n}" for n in range(5)]
    async with AsyncTracker(
        aicm_api_key=KEY,
        aicm_api_base=server.base,
        delivery_type=delivery_type,
        db_path=str(tmp_path / "q.db"),
        batch_interval=0.01,
    ) as tracker:
        for rid in ids:
            await tracker.track("openai", "svc", {"n": 1}, response_id=rid)
        assert await tracker.flush(5) == 0
        health = tracker.health()
        assert health.worker_alive
        assert (health.sent, health.dead_lettered, health.retried) == (5, 0, 0), health
        assert health.last_error is None, health.last_error
    sent = [r["response_id"] for body in server.bodies for r in json.loads(body)["tracked"]]
    assert sorted(sent) == ids
