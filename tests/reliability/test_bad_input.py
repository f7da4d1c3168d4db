"""Bad input everywhere, quick form: junk into every public entry point (hypothesis), and
services that answer garbage, hang or cut the line; queue files that are not queues."""

from __future__ import annotations

import datetime as dt
import http.server
import logging
import socket
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aicm import (
    AicmError,
    AsyncCostManagerClient,
    AsyncTracker,
    ConfigError,
    CostManager,
    QueueStoreError,
    RecordError,
    RecordTooLargeError,
    ServerError,
    Tracker,
    UnexpectedAnswerError,
    UsageValidationError,
)
from aicm._core import jsonplain
from aicm.collector import LocalCollector
from aicm.testing import capture
from reliability import badinput

pytestmark = pytest.mark.usefixtures("fast_retries")

KEY = badinput.KEY


def test_track_arguments(collector: LocalCollector, tmp_path: Path) -> None:
    """150 junk track() calls: each taken or refused naming the argument; every taken one stored."""
    tally = badinput.fuzz_track(
        collector.api_base, lambda: collector.records("track"), 150, tmp_path
    )
    assert tally.tried == 150
    assert tally.accepted + sum(tally.rejected.values()) == 150


def test_handling_configs() -> None:
    """80 junk handling configs: refused naming the config, or taken; the wrapped call works."""
    tally = badinput.fuzz_handling_configs(80)
    assert tally.tried == 80
    assert tally.accepted + sum(tally.rejected.values()) == 80


def test_schemas_and_usage() -> None:
    """80 junk schemas and usages: refused with an AicmError, or validated and stored once."""
    tally = badinput.fuzz_schemas(80)
    assert tally.tried == 80
    assert tally.accepted + sum(tally.rejected.values()) == 80


def test_ini_files(tmp_path: Path) -> None:
    """150 junk INI files (text and bytes): settings, or a ConfigError naming the file."""
    tally = badinput.fuzz_ini(150, tmp_path)
    assert tally.tried == 150
    assert set(tally.rejected) <= {"ConfigError"}


def test_environment_values(tmp_path: Path) -> None:
    """150 junk AICM_* environments: settings, or a ConfigError naming the variable."""
    tally = badinput.fuzz_env(150, tmp_path)
    assert tally.tried == 150
    assert set(tally.rejected) <= {"ConfigError", "MissingApiKeyError"}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_service_answers_to_immediate(backend: str) -> None:
    """40 garbage answers per backend: track() returns the 2xx verdict or raises an AicmError."""
    tally = badinput.fuzz_answers_immediate(40, backend)
    assert tally.tried == 40
    assert tally.accepted + sum(tally.rejected.values()) == 40


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_service_answers_to_a_memory_queue(backend: str) -> None:
    """15 garbage answers, then good: worker lives, records all accounted for, no 2xx resent."""
    tally = badinput.fuzz_answers_queued(15, backend)
    assert tally.tried == 15


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_service_answers_to_a_persistent_queue(backend: str, tmp_path: Path) -> None:
    """The same for a persistent queue: its rows are sent, dead-lettered or still queued,
    and a row answered 2xx is never sent again."""
    tally = badinput.fuzz_answers_queued(15, backend, "persistent_queue", tmp_path)
    assert tally.tried == 15


def test_queue_files_that_are_not_queues(collector: LocalCollector, tmp_path: Path) -> None:
    """30 junk queue files: QueueStoreError naming the file, which is left byte for byte."""
    tally = badinput.fuzz_queue_file_bytes(30, collector.api_base, tmp_path)
    assert tally.tried == 30
    assert set(tally.rejected) <= {"QueueStoreError"}


def test_a_foreign_sqlite_file_is_refused_and_left_alone(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Another program's SQLite file: QueueStoreError naming it, and the file is untouched."""
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE records (name TEXT, price REAL)")
        conn.execute("INSERT INTO records VALUES ('tea', 2.5)")
    before = path.read_bytes()
    with pytest.raises(QueueStoreError, match=str(path)):
        Tracker(
            aicm_api_key=KEY,
            aicm_api_base=collector.api_base,
            delivery_type="persistent_queue",
            db_path=str(path),
        ).close()
    assert path.read_bytes() == before


def test_a_locked_queue_file_waits_and_loses_nothing(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A queue file locked for 0.5 s: track() waits, then commits; all 3 records arrive once."""
    path = tmp_path / "locked.db"
    with Tracker(
        aicm_api_key=KEY,
        aicm_api_base=collector.api_base,
        delivery_type="persistent_queue",
        db_path=str(path),
        batch_interval=0.01,
    ) as tracker:
        tracker.track("openai", "svc", {"n": 0}, response_id="lock-0")
        assert tracker.flush(5) == 0
        locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        locker.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(0.5, lambda: locker.execute("ROLLBACK"))
        release.start()
        started = time.monotonic()
        tracker.track("openai", "svc", {"n": 1}, response_id="lock-1")
        waited = time.monotonic() - started
        release.join()
        locker.close()
        tracker.track("openai", "svc", {"n": 2}, response_id="lock-2")
        assert tracker.flush(5) == 0
        assert tracker.health().worker_alive
    assert 0.3 < waited < 5
    assert sorted(r["response_id"] for r in collector.records("track")) == [
        "lock-0",
        "lock-1",
        "lock-2",
    ]


# -- services that misbehave below HTTP ----------------------------------------------------


class RawServer:
    """A loopback TCP server that reads one request per connection and answers ``reply``
    bytes (``None``: never answers), then closes (``reset``: with an RST)."""

    def __init__(self, reply: bytes | None, *, reset: bool = False, trickle: float = 0) -> None:
        self.reply, self.reset, self.trickle = reply, reset, trickle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                if self.reply is None:
                    self.stop.wait(10)
                    return
                if self.trickle:
                    for byte in self.reply:
                        if self.stop.wait(self.trickle):
                            return
                        conn.sendall(bytes([byte]))
                else:
                    conn.sendall(self.reply)
                if self.reset:
                    conn.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


RAW_ANSWERS = {
    "truncated body": (b'HTTP/1.1 202 Accepted\r\nContent-Length: 500\r\n\r\n{"results": [', {}),
    "not HTTP at all": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", {}),
    "bad status line": (b"HTTP/1.1 two-oh-two Accepted\r\n\r\n", {}),
    "closed without a word": (b"", {}),
    "reset": (b"", {"reset": True}),
    "never answers": (None, {}),
    "garbage gzip": (
        b"HTTP/1.1 202 Accepted\r\nContent-Encoding: gzip\r\nContent-Length: 6\r\n\r\nnotgz!",
        {},
    ),
}


@pytest.fixture(params=sorted(RAW_ANSWERS))
def raw_server(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    """A server answering one of the raw misbehaviours."""
    reply, options = RAW_ANSWERS[request.param]
    server = RawServer(reply, **options)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.anyio
async def test_raw_misbehaviour_immediate(raw_server: RawServer) -> None:
    """Misbehaviour below HTTP: IMMEDIATE raises an AicmError within the timeout."""
    async with AsyncTracker(
        aicm_api_key=KEY, aicm_api_base=raw_server.base, timeout=0.5
    ) as tracker:
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(AicmError) as caught:
            await tracker.track("openai", "svc", {"n": 1})
    assert time.monotonic() - started < 5
    assert str(caught.value)


async def first_failure(tracker: AsyncTracker, timeout: float = 10.0) -> bool:
    """Poll until the tracker's first delivery attempt has failed; False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not tracker.health().last_error:
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.01)
    return True


@pytest.mark.anyio
async def test_raw_misbehaviour_memory_queue(raw_server: RawServer) -> None:
    """The same to a memory queue: the worker lives, retries, and keeps all 5 records."""
    async with AsyncTracker(
        aicm_api_key=KEY,
        aicm_api_base=raw_server.base,
        timeout=0.2,
        delivery_type="mem_queue",
        batch_interval=0.01,
    ) as tracker:
        for n in range(5):
            await tracker.track("openai", "svc", {"n": n})
        assert await first_failure(tracker)
        assert await tracker.flush(0.2) == 5
        health = tracker.health()
        assert health.worker_alive
        assert (health.sent, health.dead_lettered, health.queued + health.in_flight) == (0, 0, 5)
        assert health.last_error
        assert await tracker.aclose(0.0) == 5


# -- bugs found (fixed; kept as regression tests) -------------------------------------------


def _deep_json(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, content=b"[" * 100_000, headers={"Content-Type": "application/json"})


# An answer that never ends: headers trickle in one byte per 0.2 s, each within the timeout.
TRICKLE = b"HTTP/1.1 202 Accepted\r\n" + b"X-Pad: " + b"a" * 1000


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_trickling_answer_is_bounded_immediate() -> None:
    """An answer trickled byte by byte: IMMEDIATE track() gives up within a few timeouts."""
    server = RawServer(TRICKLE, trickle=0.2)
    try:
        async with AsyncTracker(aicm_api_key=KEY, aicm_api_base=server.base, timeout=0.5) as t:
            with anyio.move_on_after(3) as scope, pytest.raises(AicmError):
                await t.track("openai", "svc", {"n": 1})
            assert not scope.cancelled_caught
    finally:
        server.close()


@pytest.mark.anyio
async def test_a_trickling_answer_memory_queue() -> None:
    """A trickled answer to a memory queue: flush and close keep their deadlines, nothing lost."""
    server = RawServer(TRICKLE, trickle=0.2)
    try:
        async with AsyncTracker(
            aicm_api_key=KEY,
            aicm_api_base=server.base,
            timeout=0.5,
            delivery_type="mem_queue",
            batch_interval=0.01,
        ) as tracker:
            await tracker.track("openai", "svc", {"n": 1})
            started = time.monotonic()
            assert await tracker.flush(0.5) == 1
            health = tracker.health()
            assert (health.worker_alive, health.sent, health.queued + health.in_flight) == (
                True,
                0,
                1,
            )
            assert await tracker.aclose(0.3) == 1
            assert time.monotonic() - started < 3
            assert tracker.health().discarded == {"closed": 1}
    finally:
        server.close()


@pytest.fixture(params=["orjson", "stdlib json"])
def json_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The JSON parser aicm reads answers with: orjson when installed, else the stdlib's."""
    if request.param == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(jsonplain, "_orjson", None)
    return str(request.param)


@pytest.mark.anyio
async def test_deeply_nested_answer_immediate(json_parser: str) -> None:
    """A 2xx answer with a 100,000-deep JSON body is delivered (2xx means delivered)."""
    async with AsyncTracker(
        aicm_api_key=KEY,
        aicm_api_base="http://127.0.0.1:9",
        transport=httpx.MockTransport(_deep_json),
    ) as tracker:
        result = await tracker.track("openai", "svc", {"n": 1})
    assert result.ok


@pytest.mark.anyio
async def test_deeply_nested_answer_memory_queue(json_parser: str) -> None:
    """A 2xx answer with a 100,000-deep JSON body acks the batch: sent once, never again."""
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return _deep_json(request)

    async with AsyncTracker(
        aicm_api_key=KEY,
        aicm_api_base="http://127.0.0.1:9",
        transport=httpx.MockTransport(answer),
        delivery_type="mem_queue",
        batch_interval=0.01,
    ) as tracker:
        await tracker.track("openai", "svc", {"n": 1})
        left = await tracker.flush(1.0)
        health = tracker.health()
        await tracker.aclose(0.0)
    assert (left, health.sent, len(calls)) == (0, 1, 1)


def test_an_oversized_response_id_is_refused() -> None:
    """A record over max_record_bytes because of its response_id is refused at the call."""
    with (
        capture(),
        Tracker(aicm_api_key=KEY, delivery_type="mem_queue") as tracker,
        pytest.raises(RecordTooLargeError),
    ):
        tracker.track("openai", "svc", {"n": 1}, response_id="r" * 70_000)


def test_an_oversized_field_is_named() -> None:
    """A record too large because of its context names the context (not the usage)."""
    with (
        capture(),
        Tracker(aicm_api_key=KEY, delivery_type="mem_queue") as tracker,
        pytest.raises(RecordTooLargeError) as caught,
    ):
        tracker.track("openai", "svc", {"n": 1}, context={"note": "c" * 70_000})
    assert caught.value.field in ("context", "record")


LONE_SURROGATE = "gpt\ud800"


def test_a_lone_surrogate_in_a_name_never_jams_a_memory_queue() -> None:
    """A lone surrogate in service_key is refused at the call; the records around it arrive."""
    with capture() as captured:
        tracker = Tracker(aicm_api_key=KEY, delivery_type="mem_queue", batch_interval=0.01)
        tracker.track("openai", "svc", {"n": 0}, response_id="before")
        try:
            with pytest.raises(RecordError, match="service_key"):
                tracker.track("openai", LONE_SURROGATE, {"n": 1})
            tracker.track("openai", "svc", {"n": 2}, response_id="after")
            left = tracker.flush(1.0)
        finally:
            tracker.close(0.1)
    assert (left, captured.response_ids) == (0, ["before", "after"])


@pytest.mark.parametrize("delivery", ["immediate", "persistent_queue"])
def test_a_lone_surrogate_in_a_name_is_an_aicm_error(tmp_path: Path, delivery: str) -> None:
    """IMMEDIATE and PERSISTENT_QUEUE refuse it with a RecordError naming the field."""
    with (
        capture(),
        Tracker(aicm_api_key=KEY, delivery_type=delivery, db_path=str(tmp_path / "q")) as t,
        pytest.raises(RecordError, match="client_customer_key"),
    ):
        t.track("openai", "svc", {"n": 1}, client_customer_key=LONE_SURROGATE)


def test_an_integer_the_service_cannot_read_is_refused_at_the_call(
    collector: LocalCollector,
) -> None:
    """usage {"n": 10**400} is refused at the call with a RecordError naming usage.n."""
    with (
        Tracker(aicm_api_key=KEY, aicm_api_base=collector.api_base) as tracker,
        pytest.raises(RecordError, match=r"usage\.n"),
    ):
        tracker.track("openai", "svc", {"n": 10**400})


class _Calculator:
    """A client to wrap."""

    def add(self, a: int, b: int) -> int:
        """Add."""
        return a + b


def test_a_handling_config_that_is_not_an_object_is_named() -> None:
    """An offline config whose handling_config is a string: ConfigError naming the field."""
    config = {"config_id": "cfg", "api_id": "calc", "handling_config": "not an object"}
    with pytest.raises(ConfigError, match="handling_config"):
        CostManager(_Calculator(), configs=[config], aicm_api_key=KEY).close()


# -- numbers no double holds, oversized names, objects that raise (issue 16, item 11) ----------


class _RaisingMapping(Mapping[str, Any]):
    """A mapping whose item access raises."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("getitem failed")

    def __iter__(self) -> Iterator[str]:
        return iter(["n"])

    def __len__(self) -> int:
        return 1


class _RaisingIteration(Mapping[str, Any]):
    """A mapping whose iteration raises."""

    def __getitem__(self, key: str) -> Any:
        return 1

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iter failed")

    def __len__(self) -> int:
        return 2


class _RaisingDump:
    """A model whose model_dump raises."""

    def model_dump(self, **kwargs: Any) -> Any:
        raise RuntimeError("dump failed")


class _RaisingZone(dt.tzinfo):
    """A time zone that cannot say its offset."""

    def utcoffset(self, moment: dt.datetime | None) -> dt.timedelta:
        raise RuntimeError("tz failed")


def _raising(kind: str) -> Any:
    return {
        "getitem": _RaisingMapping(),
        "iter": _RaisingIteration(),
        "model_dump": _RaisingDump(),
        "tzinfo": dt.datetime(2024, 1, 1, tzinfo=_RaisingZone()),
        "decimal": Decimal("1e5000"),
    }[kind]


RAISING_KINDS = ["decimal", "getitem", "iter", "model_dump", "tzinfo"]


@pytest.mark.parametrize("delivery", ["immediate", "mem_queue"])
def test_values_that_raise_are_aicm_errors_at_track_naming_the_field(
    collector: LocalCollector, delivery: str
) -> None:
    """Each raising value (and a Decimal no double holds) in usage, context or as the whole
    usage: a RecordError naming the field at track(); the records around them arrive."""
    with Tracker(
        aicm_api_key=KEY,
        aicm_api_base=collector.api_base,
        delivery_type=delivery,
        batch_interval=0.01,
    ) as tracker:
        tracker.track("openai", "svc", {"n": 0}, response_id="raise-before")
        for kind in RAISING_KINDS:
            with pytest.raises(RecordError) as usage_error:
                tracker.track("openai", "svc", {"n": 1, "bad": _raising(kind)})
            assert usage_error.value.field == "usage.bad", kind
            with pytest.raises(RecordError) as context_error:
                tracker.track("openai", "svc", {"n": 1}, context={"bad": _raising(kind)})
            assert context_error.value.field == "context.bad", kind
        for kind in ("getitem", "iter", "model_dump"):
            with pytest.raises(RecordError) as whole:
                tracker.track("openai", "svc", _raising(kind))
            assert whole.value.field == "usage", kind
        with pytest.raises(RecordError) as stamp:
            tracker.track("openai", "svc", {"n": 1}, timestamp=_raising("tzinfo"))
        assert stamp.value.field == "timestamp"
        tracker.track("openai", "svc", {"n": 2}, response_id="raise-after")
        assert tracker.flush(5) == 0
        assert tracker.health().worker_alive or delivery == "immediate"
    stored = sorted(r["response_id"] for r in collector.records("track"))
    assert stored == ["raise-after", "raise-before"]


@pytest.mark.parametrize("kind", ["getitem", "iter"])
def test_a_schema_checked_usage_that_raises_is_a_validation_error(kind: str) -> None:
    """Config form: a usage mapping whose reads raise gives UsageValidationError, not its own."""
    config = {"config_id": "cfg", "api_id": "api", "manual_usage_schema": {"n": "int"}}
    with (
        capture(configs=[config]),
        Tracker("cfg", "svc", aicm_api_key=KEY) as tracker,
        pytest.raises(UsageValidationError) as caught,
    ):
        tracker.track(_raising(kind))
    assert set(caught.value.errors) <= {"n", "usage"}
    assert caught.value.errors


class _Answer:
    """A wrapped client's answer whose usage holds values that raise when read."""

    def __init__(self, kind: str) -> None:
        self.id = f"answer-{kind}"
        self.usage = {"calls": 1, "odd": _raising(kind)}
        self.model = "m-1"


class _Vendor:
    """A client to wrap whose answers carry raising values."""

    def create(self, kind: str) -> _Answer:
        """Answer."""
        return _Answer(kind)


def test_values_that_raise_never_break_a_cost_manager_call(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Inside CostManager the same values never reach the call: it returns its answer, and
    the record is made from the fields that could be read."""
    collector.set_configs(
        [
            {
                "config_id": "raising-values",
                "api_id": "_vendor",
                "handling_config": {
                    "tracked_methods": ["create"],
                    "response_fields": ["model", "usage"],
                    "payload_mapping": {
                        "config_id": "config_identifier",
                        "response_id": "response_id",
                        "model": "response_data.model",
                        "usage": "usage_data",
                        "odd": "usage_data.odd",
                    },
                },
            }
        ]
    )
    with (
        caplog.at_level(logging.WARNING, logger="aicm"),
        CostManager(
            _Vendor(), aicm_api_key=KEY, aicm_api_base=collector.api_base, batch_interval=0.01
        ) as manager,
    ):
        for kind in RAISING_KINDS:
            assert manager.client.create(kind).id == f"answer-{kind}"
        assert manager.flush(5) == 0
    records = {r["response_id"]: r for r in collector.records("track_usage")}
    assert sorted(records) == sorted(f"answer-{kind}" for kind in RAISING_KINDS)
    assert all(r["model"] == "m-1" and "odd" not in r for r in records.values())
    assert "raising-values" in caplog.text


# -- answers too large to read (issue 16, item 3) -------------------------------------------

HUGE = 300 << 20  # what a broken or hostile service might answer: 300 MiB
# Loopback socket buffers hold a few MiB the client never asked for; past the limit plus
# this, the client must have stopped reading.
SOCKET_SLACK = 16 << 20


class HugeAnswerServer:
    """A loopback HTTP server answering every request with ``status`` and a ``size``-byte
    body (chunked, or with Content-Length), generated as it is sent; it counts the body
    bytes the client took before it hung up."""

    def __init__(self, status: int, size: int, *, chunked: bool) -> None:
        self.status, self.size, self.chunked = status, size, chunked
        self.sent: list[int] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        sent = 0
        with conn:
            conn.settimeout(10)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(body) < length:
                    body += conn.recv(65536)
                framing = (
                    b"Transfer-Encoding: chunked"
                    if self.chunked
                    else b"Content-Length: %d" % self.size
                )
                conn.sendall(
                    b"HTTP/1.1 %d Answer\r\nContent-Type: application/json\r\n%s\r\n\r\n"
                    % (self.status, framing)
                )
                block = b'{"results": [' + b" " * (65536 - 13)
                while sent < self.size:
                    piece = block[: min(len(block), self.size - sent)]
                    if self.chunked:
                        conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    else:
                        conn.sendall(piece)
                    sent += len(piece)
                if self.chunked:
                    conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the client hung up: what we are here to see
            finally:
                self.sent.append(sent)

    def taken(self, answers: int = 1) -> list[int]:
        """The body bytes each answer sent, once ``answers`` answers have ended."""
        deadline = time.monotonic() + 10
        while len(self.sent) < answers and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.sent

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(params=["chunked", "content-length"])
def huge_ok(request: pytest.FixtureRequest) -> Iterator[HugeAnswerServer]:
    """A service answering 202 with a 300 MiB body."""
    server = HugeAnswerServer(202, HUGE, chunked=request.param == "chunked")
    try:
        yield server
    finally:
        server.close()


@pytest.mark.anyio
async def test_a_huge_ingest_answer_is_read_no_further_than_1_mib(
    huge_ok: HugeAnswerServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A 2xx answer of 300 MiB: track() returns at once, the record counts as delivered
    (sent once, never again), and the SDK read about 1 MiB of it, not 300 (which grew the
    process by ~900 MiB)."""
    # Limits off: the one request is the ingest one (no GET /triggered-limits at start).
    async with AsyncTracker(
        aicm_api_key=KEY, aicm_api_base=huge_ok.base, timeout=5, enforce_limits=False
    ) as tracker:
        with caplog.at_level(logging.WARNING, logger="aicm"), anyio.fail_after(20):
            result = await tracker.track("openai", "svc", {"n": 1}, response_id="huge-1")
    assert result.response_id == "huge-1"
    [sent] = huge_ok.taken()
    assert sent < (1 << 20) + SOCKET_SLACK
    assert "not read further" in caplog.text


@pytest.mark.anyio
async def test_a_huge_error_answer_is_read_no_further_than_1_mib() -> None:
    """A 500 with a 300 MiB body: ServerError with an excerpt, after about 1 MiB was read."""
    server = HugeAnswerServer(500, HUGE, chunked=True)
    try:
        async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base) as client:
            with anyio.fail_after(20), pytest.raises(ServerError) as caught:
                await client.track([{"api_id": "a", "service_key": "s", "payload": {"n": 1}}])
        assert caught.value.body.startswith('{"results": [')
        [sent] = server.taken()
        assert sent < (1 << 20) + SOCKET_SLACK
    finally:
        server.close()


@pytest.mark.parametrize("call", ["list_usage_limits", "get_triggered_limits"])
@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.anyio
async def test_a_huge_management_answer_is_refused_past_16_mib(chunked: bool, call: str) -> None:
    """A management call (GET /usage-limits, GET /triggered-limits) answered with 300 MiB:
    UnexpectedAnswerError naming the limit, after about 16 MiB were read."""
    server = HugeAnswerServer(200, HUGE, chunked=chunked)
    try:
        async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base) as client:
            with (
                anyio.fail_after(30),
                pytest.raises(UnexpectedAnswerError, match="larger than 16777216 bytes"),
            ):
                await getattr(client, call)()
        [sent] = server.taken()
        assert sent < (16 << 20) + SOCKET_SLACK
    finally:
        server.close()


@pytest.mark.anyio
async def test_a_management_answer_over_1_mib_is_read_whole() -> None:
    """A 3 MiB OpenAPI schema (or a page of events as large as a caller's ``limit``) is a
    legitimate answer: it is read whole, not cut at the ingest answers' 1 MiB."""
    filler = "x" * (3 << 20)
    body = jsonplain.dumps({"openapi": "3.1.0", "info": {"description": filler}}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=base) as client:
            with anyio.fail_after(30):
                schema = await client.get_openapi_schema()
        assert schema["info"]["description"] == filler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.anyio
async def test_a_huge_configs_answer_is_refused_past_16_mib(chunked: bool) -> None:
    """/configs answering 300 MiB: ConfigError naming the limit; about 16 MiB were read, and
    memory grew by about that much, not by the 900 MiB a whole read took."""
    server = HugeAnswerServer(200, HUGE, chunked=chunked)
    tracemalloc.start()
    try:
        async with AsyncCostManagerClient(aicm_api_key=KEY, aicm_api_base=server.base) as client:
            with anyio.fail_after(30), pytest.raises(ConfigError, match="larger than 16777216"):
                await client.get_configs("openai")
        peak = tracemalloc.get_traced_memory()[1]
        [sent] = server.taken()
        assert sent < (16 << 20) + SOCKET_SLACK
        assert peak < 64 << 20, f"{peak >> 20} MiB"
    finally:
        tracemalloc.stop()
        server.close()
