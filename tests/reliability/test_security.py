"""Security checks beyond tests/delivery/test_secrets.py: the key through every sync entry
point and every logger, TLS verification, plain-http warnings, file modes under a
permissive umask, and the collector's constant-time key check."""

from __future__ import annotations

import ast
import hmac
import inspect
import logging
import os
import ssl
import stat
import textwrap
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aicm import (
    AicmError,
    AsyncCostManager,
    AsyncCostManagerClient,
    AsyncRestUsageWrapper,
    AsyncTracker,
    CostManager,
    CostManagerClient,
    RestUsageWrapper,
    Tracker,
    get_global_delivery_health,
)
from aicm._io import logfile
from aicm.collector import Faults, LocalCollector
from aicm.collector import _logic as collector_logic
from aicm.testing import capture

SECRET = "sk-live-RELIABILITY-5ecret-0f9a8b7c"
CALC_HANDLING: dict[str, Any] = {
    "tracked_methods": ["add"],
    "payload_mapping": {"config_id": "config_identifier", "timestamp": "timestamp"},
    "static_payload_fields": {"usage": {"calls": 1}},
}


class Calculator:
    """A client to wrap."""

    def add(self, a: int, b: int) -> int:
        """Add."""
        return a + b


@pytest.fixture
def every_logger_at_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Path]:
    """Every logger (aicm, httpx, httpcore, uvicorn...) captured at DEBUG; a log file path."""
    path = tmp_path / "aicm.log"
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "aicm", "hpack"):
        caplog.set_level(logging.DEBUG, logger=name)
    aicm_logger = logging.getLogger("aicm")
    level = aicm_logger.level
    try:
        yield path
    finally:
        handler = logfile._files.pop(str(path.resolve()), None)
        if handler is not None:
            aicm_logger.removeHandler(handler)
            handler.close()
        aicm_logger.setLevel(level)


def chain(error: BaseException) -> list[str]:
    """str, repr, body and args of an error and of every error behind it."""
    texts: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen), str(getattr(seen, "body", "")), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return texts


def drive(entry: str, options: dict[str, Any], collector: LocalCollector) -> list[str]:
    """Use one sync entry point through a refused key, 5xx and a refused record; return
    every text it produced (errors, reprs, health, dead letters)."""
    seen: list[str] = []

    def attempt(call: Callable[[], object]) -> None:
        try:
            seen.append(repr(call()))
        except AicmError as exc:
            seen.extend(chain(exc))

    phases = [
        Faults(require_api_key="the-service-wants-another-key"),
        Faults(failure_rate=1.0, failure_status=503),
        Faults(reject_response_ids={"sec-2"}, reject_status=422),
        Faults(),
    ]
    if entry == "client":
        client = CostManagerClient(**options)
        for n, faults in enumerate(phases):
            collector.set_faults(faults)
            record = {"api_id": "openai", "service_key": "svc", "payload": {"n": n}}
            attempt(partial(client.track, [{**record, "response_id": f"sec-{n}"}]))
            attempt(client.get_configs)
            # The management API: reads retried on 5xx, a 404, the limits document.
            attempt(client.list_usage_limits)
            attempt(client.get_triggered_limits)
            attempt(partial(client.get_customer, "no-such-customer"))
            attempt(partial(client.list_usage_events, limit=5))
        seen += [repr(client), repr(client.settings)]
        client.close()
        return seen
    owner: Any
    if entry == "tracker":
        owner = Tracker(**options)
    elif entry == "cost_manager":
        owner = CostManager(Calculator(), configs=[_calc_config()], **options)
    else:
        owner = RestUsageWrapper(httpx.Client(), base_url=collector.api_base, **options)
    for n, faults in enumerate(phases):
        collector.set_faults(faults)
        if entry == "tracker":
            attempt(partial(owner.track, "openai", "svc", {"n": n}, response_id=f"sec-{n}"))
        elif entry == "cost_manager":
            attempt(partial(owner.client.add, n, 1))
        else:
            attempt(lambda: owner.get("/_collector/health"))
        attempt(lambda: owner.flush(0.3))
        seen += [repr(owner.health()), str(owner.health().last_error)]
    seen += [repr(owner), repr(get_global_delivery_health())]
    seen += [repr(d) for d in owner.dead_letters()]
    attempt(lambda: owner.close(2))
    return seen


def _calc_config() -> dict[str, Any]:
    return {"config_id": "calc-sec", "api_id": "calculator", "handling_config": CALC_HANDLING}


@pytest.mark.parametrize("entry", ["tracker", "cost_manager", "rest", "client"])
def test_the_key_never_leaks_from_sync_entry_points(
    collector: LocalCollector,
    tmp_path: Path,
    every_logger_at_debug: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    entry: str,
) -> None:
    """Every sync entry point at DEBUG with bodies: the key is in no log, error, repr or file."""
    monkeypatch.setenv("AICM_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("AICM_BACKOFF_CAP", "0.05")
    monkeypatch.setenv("AICM_AUTH_RETRY_INTERVAL", "0.05")
    monkeypatch.setenv("AICM_MAX_ATTEMPTS", "1")
    host = collector.api_base.split("://", 1)[1].rsplit(":", 1)[0]  # REST api_id: hostname
    collector.set_configs(
        [
            {
                "config_id": "health-sec",
                "api_id": host,
                "handling_config": {
                    "tracked_methods": ["GET /_collector/health"],
                    "payload_mapping": {"config_id": "config_identifier", "timestamp": "timestamp"},
                    "static_payload_fields": {"usage": {"calls": 1}},
                },
            }
        ]
    )
    options: dict[str, Any] = {"aicm_api_key": SECRET, "aicm_api_base": collector.api_base}
    if entry != "client":
        options.update(
            delivery_type="persistent_queue",
            db_path=str(tmp_path / "queue.db"),
            batch_interval=0.01,
            log_level="DEBUG",
            log_file=str(every_logger_at_debug),
            log_bodies=True,
        )
    seen = drive(entry, options, collector)
    seen += [caplog.text, *(r.getMessage() for r in caplog.records)]
    seen += [str(r.exc_info[1]) for r in caplog.records if r.exc_info and r.exc_info[1]]
    assert any("401" in text for text in seen), "the refused-key phase left no trace"
    if entry == "client":
        assert any("not found" in text for text in seen), "no management call was answered"
    assert any(r.name.startswith("httpx") for r in caplog.records), "httpx logged nothing"
    leaks = [text[:200] for text in seen if SECRET in text]
    assert leaks == []
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    stored = repr(collector.records("track")) + repr(collector.records("track_usage"))
    assert SECRET not in stored + repr(collector.stats())
    assert collector.db_path is not None
    assert SECRET.encode() not in Path(collector.db_path).read_bytes()


def test_the_capture_keeps_no_key() -> None:
    """aicm.testing's capture holds records, never the Authorization header or key."""
    with capture() as captured, Tracker(aicm_api_key=SECRET) as tracker:
        tracker.track("openai", "svc", {"n": 1})
    assert len(captured) == 1
    assert SECRET not in repr(captured.records) + repr(captured)


# -- TLS ----------------------------------------------------------------------------------------


def ssl_context_of(client: AsyncCostManagerClient) -> ssl.SSLContext:
    """The SSL context the client's connection pool would use (httpx/httpcore internals)."""
    context: ssl.SSLContext = client._http._transport._pool._ssl_context  # type: ignore[attr-defined]
    return context


def check_tls(client: AsyncCostManagerClient) -> None:
    """Certificates and host names are verified, TLS 1.2 at least."""
    context = ssl_context_of(client)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


HTTPS: dict[str, Any] = {"aicm_api_key": SECRET, "aicm_api_base": "https://aicm.example"}


@pytest.mark.anyio
async def test_tls_is_verified_by_default_async() -> None:
    """Every async entry point's service client verifies certificates and host names."""
    async with AsyncCostManagerClient(**HTTPS) as client:
        check_tls(client)
    tracker = AsyncTracker(**HTTPS)
    check_tls(tracker.client)
    await tracker.aclose()
    manager = AsyncCostManager(Calculator(), configs=[], **HTTPS)
    check_tls(manager.aicm_client)
    await manager.aclose()
    async with httpx.AsyncClient() as http:
        wrapper = AsyncRestUsageWrapper(http, base_url="https://api.example", **HTTPS)
        check_tls(wrapper.aicm_client)
        await wrapper.aclose()


def test_tls_is_verified_by_default_sync() -> None:
    """Every sync entry point's service client verifies certificates and host names."""
    client = CostManagerClient(**HTTPS)
    check_tls(client._async)
    client.close()
    with Tracker(**HTTPS) as tracker:
        check_tls(tracker._async.client)
    with CostManager(Calculator(), configs=[], **HTTPS) as manager:
        check_tls(manager._async.aicm_client)
    with RestUsageWrapper(httpx.Client(), base_url="https://api.example", **HTTPS) as wrapper:
        check_tls(wrapper._async.aicm_client)


# -- plain http -----------------------------------------------------------------------------


def build_entry(entry: str, api_base: str) -> None:
    """Build and close one sync entry point on ``api_base``."""
    options: dict[str, Any] = {"aicm_api_key": SECRET, "aicm_api_base": api_base}
    if entry == "tracker":
        Tracker(**options).close()
    elif entry == "cost_manager":
        CostManager(Calculator(), configs=[], **options).close()
    else:
        RestUsageWrapper(httpx.Client(), base_url="https://api.example", **options).close()


@pytest.mark.parametrize("entry", ["tracker", "cost_manager", "rest"])
@pytest.mark.parametrize(
    ("api_base", "warnings"),
    [("http://aicm.example:8080", 1), ("http://127.0.0.1:9", 0), ("https://aicm.example", 0)],
)
def test_plain_http_to_a_remote_host_warns_from_every_entry_point(
    entry: str, api_base: str, warnings: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Every entry point warns once about http:// to a remote host, never for loopback/https."""
    with caplog.at_level(logging.WARNING, logger="aicm"):
        build_entry(entry, api_base)
    found = [r for r in caplog.records if "plain http" in r.getMessage()]
    assert len(found) == warnings
    assert SECRET not in caplog.text


# -- file modes -------------------------------------------------------------------------------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000: nothing but aicm's own choice keeps its files private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder: Path) -> dict[str, int]:
    """The permission bits of every entry in ``folder``."""
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


@pytest.mark.usefixtures("permissive_umask")
@pytest.mark.anyio
async def test_async_queue_files_are_private_under_umask_000(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Under umask 000 an async tracker's queue folder is 0700 and its files 0600."""
    folder = tmp_path / "fresh" / "queue"
    collector.set_faults(Faults(failure_rate=1.0))  # rows stay, so the WAL does too
    async with AsyncTracker(
        aicm_api_key=SECRET,
        aicm_api_base=collector.api_base,
        delivery_type="persistent_queue",
        db_path=str(folder / "q.db"),
        batch_interval=0.01,
    ) as tracker:
        for n in range(3):
            await tracker.track("openai", "svc", {"n": n})
        await anyio.sleep(0.1)
        assert modes(folder) == {"q.db": 0o600, "q.db-wal": 0o600, "q.db-shm": 0o600}
        await tracker.aclose(0.1)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert modes(folder)["q.db"] == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_sync_queue_file_is_private_under_umask_000(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """The same for the sync Tracker's writer: 0700 folder, 0600 files, umask or not."""
    folder = tmp_path / "sync" / "queue"
    collector.set_faults(Faults(failure_rate=1.0))
    with Tracker(
        aicm_api_key=SECRET,
        aicm_api_base=collector.api_base,
        delivery_type="persistent_queue",
        db_path=str(folder / "q.db"),
        batch_interval=0.01,
    ) as tracker:
        tracker.track("openai", "svc", {"n": 1})
        assert set(modes(folder).values()) == {0o600}
        tracker.close(0.1)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


# -- the collector's key check ------------------------------------------------------------------


def test_the_collector_compares_every_key_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Right, wrong, short, long and non-ASCII keys all go through hmac.compare_digest."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    expected = "k" * 32
    tried = [expected, "x" * 32, "k", "k" * 64, "k" * 31 + "é", "k" * 31 + "€"]
    verdicts = [collector_logic.api_key_matches(f"Bearer {key}", expected) for key in tried]
    assert verdicts == [True, False, False, False, False, False]
    assert len(calls) == 5  # "€" is no latin-1 header value: refused before any comparison
    assert all(b == expected.encode() for _, b in calls)


def test_the_collector_key_check_has_no_plain_comparison() -> None:
    """api_key_matches never compares the presented key with == or != (timing leak)."""
    source = textwrap.dedent(inspect.getsource(collector_logic.api_key_matches))
    tree = ast.parse(source)
    secrets = {"token", "given", "expected"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)) for op in node.ops
        ):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & secrets, ast.unparse(node)
    assert "hmac.compare_digest" in source


# -- served configs never carry the user's other credentials -------------------------------------

PROVIDER_SECRET = "sk-provider-PR0VIDER-5ecret-77aa"
CALL_SECRET = "per-call-CALL-5ecret-99bb"


def served(
    collector: LocalCollector, api_id: str, config_id: str, handling: dict[str, Any]
) -> None:
    """The collector serves one handling config for ``api_id``."""
    collector.set_configs([{"config_id": config_id, "api_id": api_id, "handling_config": handling}])


def everything_stored(collector: LocalCollector, tmp_path: Path) -> str:
    """Every record, stat and byte the collector and the SDK keep, as one text."""
    texts = [repr(collector.records("track_usage")), repr(collector.records("track"))]
    texts.append(repr(collector.stats()))
    assert collector.db_path is not None
    texts.append(Path(collector.db_path).read_bytes().decode("latin-1"))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(texts)


def refusals(caplog: pytest.LogCaptureFixture, config_id: str) -> list[str]:
    """The WARNING lines that name ``config_id``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and repr(config_id) in r.getMessage()
    ]


def test_a_served_config_cannot_send_a_wrapped_httpx_clients_headers(
    collector: LocalCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A config for a wrapped httpx.Client mapping ``request.headers``, the request object,
    the answer's headers and ``request_fields: ["headers"]``: the record is made from the
    rest, the client's Authorization and the per-call X-Api-Key reach the collector nowhere,
    and each refused path is logged once, naming the config and the path."""
    served(
        collector,
        "httpx-client",
        "leaky-httpx",
        {
            "tracked_methods": ["get"],
            "request_fields": ["url", "headers"],
            "response_fields": [
                {"key": "sent", "path": "request.headers"},
                {"key": "req", "path": "request"},
                {"key": "answer_headers", "path": "headers"},
                {"key": "status", "path": "status_code"},
            ],
            "payload_mapping": {
                "config_id": "config_identifier",
                "timestamp": "timestamp",
                "status": "response_data.status",
                "url": "request_data.url",
                "asked": "request_data.headers",
                "arguments": "request_data",
                "sent": "response_data.sent",
                "req": "response_data.req",
                "answer_headers": "response_data.answer_headers",
            },
            "static_payload_fields": {"usage": {"calls": 1}},
        },
    )
    http = httpx.Client(headers={"Authorization": f"Bearer {PROVIDER_SECRET}"})
    url = f"{collector.api_base}/_collector/health"
    with (
        caplog.at_level(logging.WARNING, logger="aicm"),
        CostManager(
            http,
            api_id="httpx-client",
            aicm_api_key=SECRET,
            aicm_api_base=collector.api_base,
            db_path=str(tmp_path / "q.db"),
            delivery_type="persistent_queue",
            batch_interval=0.01,
        ) as manager,
    ):
        for _ in range(2):
            answer = manager.client.get(url, headers={"X-Api-Key": CALL_SECRET})
            assert answer.json() == {"status": "ok"}
        assert manager.flush(5) == 0
    http.close()
    records = collector.records("track_usage")
    assert [(r["status"], r["url"], r["arguments"]) for r in records] == [
        (200, url, {"url": url})
    ] * 2
    assert all(not {"asked", "sent", "req", "answer_headers"} & set(r) for r in records)
    stored = everything_stored(collector, tmp_path)
    assert PROVIDER_SECRET not in stored
    assert CALL_SECRET not in stored
    warned = refusals(caplog, "leaky-httpx")
    for path in ("'headers'", "'request.headers'", "'response_data.req'"):
        assert len([w for w in warned if f"path {path}" in w]) == 1, (path, warned)
    assert PROVIDER_SECRET not in caplog.text
    assert CALL_SECRET not in caplog.text


class Completion:
    """A provider's answer that holds the client's credentials beside its usage."""

    def __init__(self, key: str) -> None:
        self.id = "cmpl-7"
        self.usage = {"input_tokens": 3, "output_tokens": 5, "max_tokens": 9, "token": key}
        self.api_key = key
        self.client_secret = key
        self.session = {"tokens": 4, "access_token": key, "Authorization": f"Bearer {key}"}


class Provider:
    """A client shaped like the vendor SDKs: per-call headers and key, an api_key attribute."""

    def __init__(self) -> None:
        self.api_key = PROVIDER_SECRET

    def create(
        self,
        model: str,
        *,
        headers: dict[str, str] | None = None,
        extra_headers: dict[str, str] | None = None,
        extra_query: dict[str, str] | None = None,
        api_key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Completion:
        """Answer with the key this client holds."""
        return Completion(self.api_key)


def test_a_served_config_cannot_send_per_call_headers_or_a_returned_api_key(
    collector: LocalCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``request_fields`` naming headers, extra_headers, extra_query and api_key, paths to the
    answer's ``api_key`` and ``client_secret`` attributes, credential keys inside delivered
    values: none reaches the collector; the usage (``input_tokens``, ``max_tokens``...) does."""
    served(
        collector,
        "provider",
        "leaky-provider",
        {
            "tracked_methods": ["create"],
            "request_fields": [
                "model",
                "headers",
                "extra_headers",
                "extra_query",
                "api_key",
                "metadata",
            ],
            "response_fields": ["api_key", "client_secret", "session"],
            "payload_mapping": {
                "config_id": "config_identifier",
                "timestamp": "timestamp",
                "response_id": "response_id",
                "usage": "usage_data",
                "request": "request_data",
                "key": "response_data.api_key",
                "secret": "response_data.client_secret",
                "session": "response_data.session",
                "asked": "request_data.headers",
                "extra": "request_data.extra_headers",
                "meta": "request_data.metadata",
            },
        },
    )
    with (
        caplog.at_level(logging.WARNING, logger="aicm"),
        CostManager(
            Provider(),
            aicm_api_key=SECRET,
            aicm_api_base=collector.api_base,
            batch_interval=0.01,
        ) as manager,
    ):
        manager.client.create(
            "m-1",
            headers={"X-Api-Key": CALL_SECRET},
            extra_headers={"Authorization": f"Bearer {CALL_SECRET}"},
            extra_query={"key": CALL_SECRET},
            api_key=CALL_SECRET,
            metadata={"team": "a", "password": CALL_SECRET, "inner": {"apiKey": CALL_SECRET}},
        )
        assert manager.flush(5) == 0
    [record] = collector.records("track_usage")
    meta = {"team": "a", "inner": {}}
    assert record["usage"] == {"input_tokens": 3, "output_tokens": 5, "max_tokens": 9}
    assert record["request"] == {"model": "m-1", "metadata": meta}
    assert record["meta"] == meta
    assert record["session"] == {"tokens": 4}
    assert not {"key", "secret", "asked", "extra"} & set(record)
    stored = everything_stored(collector, tmp_path)
    assert PROVIDER_SECRET not in stored
    assert CALL_SECRET not in stored
    warned = refusals(caplog, "leaky-provider")
    for path in ("'api_key'", "'client_secret'", "'headers'", "'extra_headers'", "'extra_query'"):
        assert len([w for w in warned if f"path {path}" in w]) == 1, (path, warned)
    assert PROVIDER_SECRET not in caplog.text
    assert CALL_SECRET not in caplog.text


@pytest.mark.anyio
async def test_credentials_in_the_rest_base_url_never_leave(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A base URL carrying ``user:password@`` and a ``?key=`` query: the call goes out with
    them, but the ``base_url`` source, the repr and the logs carry neither."""
    host = collector.api_base.split("://", 1)[1]
    collector.set_configs(
        [
            {
                "config_id": "base-url-creds",
                "api_id": host.rsplit(":", 1)[0],
                "handling_config": {
                    "tracked_methods": ["GET /_collector/health"],
                    "payload_mapping": {"config_id": "config_identifier", "base": "base_url"},
                    "static_payload_fields": {"usage": {"calls": 1}},
                },
            }
        ]
    )
    base = f"http://svc-user:{CALL_SECRET}@{host}/?key={PROVIDER_SECRET}"
    with caplog.at_level(logging.DEBUG, logger="aicm"):
        async with (
            httpx.AsyncClient() as http,
            AsyncRestUsageWrapper(
                http, base_url=base, aicm_api_key=SECRET, aicm_api_base=collector.api_base
            ) as wrapper,
        ):
            answer = await wrapper.get(f"http://svc-user:{CALL_SECRET}@{host}/_collector/health")
            assert answer.json() == {"status": "ok"}
            shown = repr(wrapper)
    [record] = collector.records("track_usage")
    assert record["base"] == f"http://{host}/"
    for text in (shown, caplog.text, repr(collector.records("track_usage"))):
        assert CALL_SECRET not in text
        assert PROVIDER_SECRET not in text
