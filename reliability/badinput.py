"""Bad input everywhere: hypothesis drives junk into aicm's public entry points.

Each ``fuzz_*`` function runs ``examples`` hypothesis examples against one entry point
and returns a :class:`Tally` (tried, accepted, rejected by error type); a broken rule
raises ``AssertionError`` (hypothesis shrinks it first). The rules, everywhere:

- a rejection is an ``AicmError`` subclass whose message names the problem (the field,
  the setting, the file);
- the delivery worker stays alive (``health().worker_alive``) and nothing hangs: every
  wait is bounded;
- what was accepted before still arrives (nothing already queued is lost).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicm import (
    AicmError,
    AsyncTracker,
    ConfigError,
    CostManager,
    RecordError,
    Tracker,
    resolve_settings,
)
from aicm._core.models import vendor_service_key
from aicm.testing import capture

__all__ = [
    "ANSWER_STATUSES",
    "Tally",
    "answers",
    "fuzz_answers_immediate",
    "fuzz_answers_queued",
    "fuzz_env",
    "fuzz_handling_configs",
    "fuzz_ini",
    "fuzz_queue_file_bytes",
    "fuzz_schemas",
    "fuzz_track",
    "junk",
]

KEY = "fuzz-key-0123456789abcdef"
TRACK_FIELDS = frozenset(
    {"api_id", "service_key", "usage", "client_customer_key", "context", "response_id"}
    | {"timestamp", "record", "payload"}
)


@attrs.define
class Tally:
    """How many inputs an entry point was given, took, and refused (by error type)."""

    target: str
    tried: int = 0
    accepted: int = 0
    rejected: Counter[str] = attrs.Factory(Counter)

    def refuse(self, exc: BaseException) -> None:
        """Count one rejection."""
        self.rejected[type(exc).__name__] += 1


def _settings(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# -- strategies ------------------------------------------------------------------------


class _Opaque:
    """An object JSON cannot carry."""

    def __repr__(self) -> str:
        return "<opaque>"


def _too_long_to_print() -> int:
    """An integer Python refuses to print (past 4300 digits); built when drawn, since
    hypothesis prints the values a strategy is made of."""
    return 10**5000


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),  # past 64 bits: refused at the call
    st.sampled_from([2**1024, -(2**1024)]),  # past any float
    st.builds(_too_long_to_print),
    st.floats(),  # NaN and infinities included
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8")),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e", "x" * 70_000]),
    st.binary(max_size=20),
    st.decimals(),
    st.datetimes(),
    st.dates(),
    st.uuids(),
    st.complex_numbers(),
    st.builds(_Opaque),
)

_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)


def junk() -> st.SearchStrategy[Any]:
    """Any Python value, nested: what a careless caller may pass."""
    keys = st.one_of(
        st.text(max_size=10), st.integers(), st.builds(_too_long_to_print), st.none(), st.booleans()
    )
    return st.recursive(
        _SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.tuples(inner, inner),
            st.dictionaries(keys, inner, max_size=4),
            st.frozensets(st.integers(), max_size=3),
        ),
        max_leaves=12,
    )


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON document (what a misbehaving service may send)."""
    return st.recursive(
        _JSON_SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=12,
    )


_NAMES = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40)
_USAGE = st.dictionaries(
    st.text(max_size=12), st.one_of(st.integers(), st.floats(allow_nan=False)), max_size=4
)


def _mostly(valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, one time in four ``bad``: so that whole inputs get through too."""
    return st.integers(0, 3).flatmap(lambda n: bad if n == 0 else valid)


def _maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return _mostly(valid, junk())


@st.composite
def track_calls(draw: st.DrawFn) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``track(api_id, service_key, usage, **options)`` arguments, often bad."""
    positional = (draw(_maybe(_NAMES)), draw(_maybe(_NAMES)), draw(_maybe(_USAGE)))
    options = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "client_customer_key": _maybe(_NAMES),
                "context": _maybe(st.dictionaries(st.text(max_size=8), _JSON_SCALARS)),
                "response_id": _maybe(st.uuids().map(str)),
                "timestamp": _maybe(
                    st.one_of(
                        st.datetimes(timezones=st.just(dt.timezone.utc)),
                        st.datetimes().map(lambda d: d.isoformat()),
                        st.floats(min_value=0, max_value=4e9),
                        st.text(max_size=30),
                    )
                ),
            },
        )
    )
    return positional, options


_TYPE_WORDS = [
    "int",
    "float",
    "str",
    "bool",
    "list",
    "dict",
    "tuple",
    "set",
    "Any",
    "None",
    "List[int]",
    "Dict[str, int]",
    "Optional[str]",
    "Union[int, str]",
    "int | None",
    "List[List[Dict[str, float]]]",
    "List[",
    "Dict[str]",
    "Optional[]",
    "Union[]",
    "intt",
    "",
    "|",
    "List[int]]",
    "Dict[str, List[Optional[int | str]]]",
]


def schemas() -> st.SearchStrategy[Any]:
    """A ``manual_usage_schema``: the short and the long form, plausible or broken."""
    type_strings = st.one_of(st.sampled_from(_TYPE_WORDS), st.text(max_size=20), json_values())
    short = st.dictionaries(st.text(max_size=10), type_strings, max_size=4)
    field_spec = st.one_of(
        type_strings,
        st.fixed_dictionaries(
            {}, optional={"type": type_strings, "required": st.one_of(st.booleans(), json_values())}
        ),
    )
    long = st.fixed_dictionaries(
        {
            "fields": st.one_of(
                st.dictionaries(st.text(max_size=10), field_spec, max_size=4), json_values()
            )
        }
    )
    return st.one_of(short, long, json_values())


_HANDLING_KEYS = [
    "tracked_methods",
    "request_fields",
    "response_fields",
    "payload_mapping",
    "static_payload_fields",
    "list_path",
    "only_success",
    "usage_fields",
]


def handling_configs() -> st.SearchStrategy[dict[str, Any]]:
    """A handling config (always an object): its fields plausible, broken or unknown."""
    paths = st.sampled_from(
        [
            "config_identifier",
            "timestamp",
            "response_id",
            "service_id",
            "request_data.a",
            "response_data.value",
            "response_data",
            "usage_data.x",
            "request_data.",
            "response_data[0]",
            "..",
            "",
            "nowhere.at.all",
        ]
    )
    bad = json_values()
    plausible = {
        "tracked_methods": _mostly(
            st.lists(st.sampled_from(["add", "sub", "chat.completions.create"]), min_size=1),
            st.one_of(st.lists(st.sampled_from(["ad*", "*", "", "GET x", "a..b"])), bad),
        ),
        "request_fields": _mostly(st.lists(st.sampled_from(["a", "b", "", "a.b"])), bad),
        "response_fields": _mostly(
            st.lists(
                _mostly(
                    st.fixed_dictionaries(
                        {"key": st.sampled_from(["value", "", "a.b"]), "path": paths}
                    ),
                    bad,
                ),
                max_size=3,
            ),
            bad,
        ),
        "payload_mapping": _mostly(
            st.dictionaries(
                st.sampled_from(["config_id", "usage", "response_id", "x"]), paths, min_size=1
            ),
            st.one_of(st.dictionaries(st.text(max_size=8), bad, max_size=3), bad),
        ),
        "static_payload_fields": _mostly(st.dictionaries(st.text(max_size=8), bad), bad),
        "list_path": _mostly(paths, bad),
        "only_success": _mostly(st.booleans(), bad),
        "usage_fields": bad,
    }
    return st.fixed_dictionaries(
        {"tracked_methods": plausible["tracked_methods"]},
        optional={
            **{k: v for k, v in plausible.items() if k != "tracked_methods"},
            "unknown_key": json_values(),
        },
    )


ANSWER_STATUSES = [200, 201, 202, 204, 301, 304, 400, 401, 403, 404, 408, 409, 413, 415, 422]
ANSWER_STATUSES += [425, 429, 431, 451, 500, 501, 502, 503, 504, 507, 599]


@st.composite
def answers(draw: st.DrawFn) -> tuple[int, dict[str, str], bytes]:
    """A service answer: any status, odd headers, and a body that is garbage, truncated,
    huge or of the wrong shape."""
    status = draw(st.one_of(st.sampled_from(ANSWER_STATUSES), st.integers(200, 599)))
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["Retry-After"] = draw(
            st.one_of(
                st.sampled_from(["0", "0.01", "-5", "nan", "inf", "1e308", "", "soon"]),
                st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"]),
                st.text(
                    alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=12
                ),
            )
        )
    headers["Content-Type"] = draw(
        st.sampled_from(["application/json", "text/html", "application/octet-stream", "json"])
    )
    shape = draw(
        st.sampled_from(["json", "results", "truncated", "binary", "empty", "huge", "html"])
    )
    body: bytes
    if shape == "json":
        body = _dumps(draw(json_values()))
    elif shape == "results":
        result = st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "response_id": json_values(),
                    "status": st.one_of(
                        st.sampled_from(["queued", "completed", "error", "service_key_unknown"]),
                        json_values(),
                    ),
                    "errors": json_values(),
                },
            ),
            json_values(),
        )
        document = draw(
            st.fixed_dictionaries(
                {"results": st.one_of(st.lists(result, max_size=4), json_values())},
                optional={"triggered_limits": json_values(), "detail": json_values()},
            )
        )
        body = _dumps(document)
    elif shape == "truncated":
        whole = _dumps({"results": [{"response_id": "x", "status": "queued"}]})
        body = whole[: draw(st.integers(0, len(whole) - 1))]
    elif shape == "binary":
        body = draw(st.binary(max_size=200))
    elif shape == "empty":
        body = b""
    elif shape == "huge":
        body = b'{"results": [' + b'{"status": "queued"},' * 40_000 + b"{}]}"
    else:
        body = b"<html><body>502 Bad Gateway</body></html>"
    return status, headers, body


def _dumps(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


# -- message checks ---------------------------------------------------------------------


def expect_named(exc: BaseException, *needles: str) -> None:
    """``exc``'s message is not empty and names one of ``needles`` (when any is given)."""
    text = str(exc)
    assert text, f"{type(exc).__name__} with an empty message"
    if needles:
        assert any(n in text for n in needles), f"the message names none of {needles}: {text}"


def check_record_error(exc: AicmError) -> None:
    """A rejected ``track`` names the argument (and path) at fault."""
    text = str(exc)
    assert text, f"{type(exc).__name__} with an empty message"
    if isinstance(exc, RecordError):
        root = exc.field.split(".", 1)[0].split("[", 1)[0]
        assert root in TRACK_FIELDS, f"field {exc.field!r} names no argument: {text}"
        assert text.startswith(f"{exc.field}: "), f"message does not lead with its field: {text}"


# -- the targets -------------------------------------------------------------------------


def fuzz_track(
    api_base: str, stored: Callable[[], list[dict[str, Any]]], examples: int, workdir: Path
) -> Tally:
    """Junk ``track`` arguments into a running memory queue: each call is taken or refused
    with an ``AicmError`` naming the argument; every record taken arrives, once."""
    tally = Tally("track arguments")
    taken: set[tuple[str, str]] = set()
    earlier = {(r["service_key"], r["response_id"]) for r in stored()}
    tracker = Tracker(
        aicm_api_key=KEY,
        aicm_api_base=api_base,
        delivery_type="mem_queue",
        batch_interval=0.05,
        queue_size=1_000_000,
    )
    try:

        @_settings(examples)
        @given(call=track_calls())
        def one(call: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
            positional, options = call
            tally.tried += 1
            try:
                result = tracker.track(*positional, **options)
            except AicmError as exc:
                check_record_error(exc)
                tally.refuse(exc)
                return
            tally.accepted += 1
            # The collector keys a record by the service_key it was sent with.
            taken.add((vendor_service_key(positional[0], positional[1]), result.response_id))
            assert tracker.health().worker_alive

        one()
        left = tracker.flush(30)
        health = tracker.health()
        assert left == 0, f"{left} accepted record(s) not delivered: {health.last_error}"
        assert health.worker_alive
        dead = [(d.response_id, d.reason[:200]) for d in tracker.dead_letters()[:3]]
        assert health.dead_lettered == 0, f"the service refused records aicm took: {dead}"
    finally:
        tracker.close(10)
    found = {(r["service_key"], r["response_id"]) for r in stored()} - earlier
    # An id the collector already held (from an earlier run) is the same event: stored once.
    taken -= earlier
    assert found == taken, (
        f"{len(taken - found)} accepted record(s) missing, {len(found - taken)} extra"
    )
    return tally


class _Calculator:
    """The client a fuzzed CostManager wraps."""

    def add(self, a: int, b: int) -> int:
        """Add two numbers."""
        return a + b


def fuzz_handling_configs(examples: int) -> Tally:
    """Junk handling configs into ``CostManager``: refused at construction with an
    ``AicmError`` naming the config, or taken; the wrapped call always returns its value."""
    tally = Tally("handling configs")

    @_settings(examples)
    @given(handling=handling_configs())
    def one(handling: dict[str, Any]) -> None:
        tally.tried += 1
        config = {"config_id": "cfg-fuzz", "api_id": "calc", "handling_config": handling}
        with capture():
            try:
                manager = CostManager(
                    _Calculator(), api_id="calc", configs=[config], aicm_api_key=KEY
                )
            except AicmError as exc:
                expect_named(exc, "cfg-fuzz")
                tally.refuse(exc)
                return
            tally.accepted += 1
            with manager:
                assert manager.client.add(2, 3) == 5
                assert manager.client.add(a=1, b=1) == 2
                assert manager.flush(5) == 0
                assert manager.health().worker_alive

    one()
    return tally


def fuzz_schemas(examples: int) -> Tally:
    """Junk ``manual_usage_schema`` from the service and junk usage: a config tracker is
    refused with an ``AicmError``, or validates; what it takes, the service stores."""
    tally = Tally("schemas and usage")

    @_settings(examples)
    @given(schema=schemas(), usage=st.one_of(_USAGE, json_values(), junk()))
    def one(schema: Any, usage: Any) -> None:
        tally.tried += 1
        config = {"config_id": "cfg", "api_id": "api", "manual_usage_schema": schema}
        with capture(configs=[config]) as captured:
            try:
                tracker = Tracker("cfg", "svc", aicm_api_key=KEY)
            except AicmError as exc:
                expect_named(exc)
                tally.refuse(exc)
                return
            with tracker:
                try:
                    result = tracker.track(usage)
                except AicmError as exc:
                    expect_named(exc)
                    tally.refuse(exc)
                    return
                tally.accepted += 1
                assert result.ok, result
                assert captured.response_ids == [result.response_id]

    one()
    return tally


_INI_LINES = [
    "[aicm]",
    "[AICM]",
    "[other]",
    "[aicm",
    "api_base = https://example.invalid",
    "api_base = ftp://x",
    "aicm_api_base=",
    "api_url = /v9",
    "timeout = -1",
    "timeout = nan",
    "timeout = 1e999",
    "queue_size = abc",
    "queue_size = 0",
    "queue_size = 10",
    "delivery_type = carrier_pigeon",
    "delivery_type = MEM_QUEUE",
    "log_level = loud",
    "log_bodies = maybe",
    "api_key = sk-in-a-file",
    "unknown_setting = 1",
    "  indented = 1",
    "no equals sign",
    "=",
    "; comment",
    "# comment",
    "%(interpolation)s = 1",
    "batch_interval = 0.1",
    "max_age = ",
]


def fuzz_ini(examples: int, workdir: Path) -> Tally:
    """Junk INI files: settings resolve, or a ``ConfigError`` names the file."""
    tally = Tally("INI files")
    workdir.mkdir(parents=True, exist_ok=True)
    text_files = st.lists(
        st.one_of(st.sampled_from(_INI_LINES), st.text(max_size=30)), max_size=8
    ).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))

    @_settings(examples)
    @given(data=st.one_of(text_files, st.binary(max_size=200)))
    def one(data: bytes) -> None:
        tally.tried += 1
        path = workdir / f"fuzz-{uuid.uuid4().hex[:8]}.ini"
        path.write_bytes(data)
        try:
            resolve_settings(ini_path=path, environ={})
        except ConfigError as exc:
            expect_named(exc, str(path))
            tally.refuse(exc)
            return
        finally:
            path.unlink()
        tally.accepted += 1

    one()
    return tally


_ENV_NAMES = [
    "AICM_API_BASE",
    "AICM_API_URL",
    "AICM_DELIVERY_TYPE",
    "AICM_DELIVERY_ON_FULL",
    "AICM_LOG_LEVEL",
    "AICM_LOG_BODIES",
    "AICM_TIMEOUT",
    "AICM_QUEUE_SIZE",
    "AICM_MAX_BATCH_SIZE",
    "AICM_BATCH_INTERVAL",
    "AICM_BLOCK_TIMEOUT",
    "AICM_MAX_ATTEMPTS",
    "AICM_MAX_RECORD_BYTES",
    "AICM_BACKOFF_BASE",
    "AICM_BACKOFF_CAP",
    "AICM_AUTH_RETRY_INTERVAL",
    "AICM_LEASE_SECONDS",
    "AICM_MAX_AGE",
    "AICM_CLOSE_TIMEOUT",
]


def fuzz_env(examples: int, workdir: Path) -> Tally:
    """Junk ``AICM_*`` environment values: settings resolve, or a ``ConfigError`` names
    the variable."""
    tally = Tally("environment variables")
    env_text = st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20
    )
    values = st.one_of(
        st.sampled_from(["0", "-1", "nan", "inf", "1e999", "true", "yes", "ftp://x", "1.5"]),
        env_text,
    )

    @_settings(examples)
    @given(environ=st.dictionaries(st.sampled_from(_ENV_NAMES), values, min_size=1, max_size=3))
    def one(environ: dict[str, str]) -> None:
        tally.tried += 1
        try:
            resolve_settings(ini_path=workdir / "absent.ini", environ=environ)
        except ConfigError as exc:
            expect_named(exc, *environ)
            tally.refuse(exc)
            return
        tally.accepted += 1

    one()
    return tally


def _mock(status: int, headers: Mapping[str, str], body: bytes) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=dict(headers), content=body)

    return httpx.MockTransport(answer)


def fuzz_answers_immediate(examples: int, backend: str = "asyncio") -> Tally:
    """Garbage service answers to ``IMMEDIATE`` tracking: ``track`` returns the verdict or
    raises an ``AicmError``, within a bounded time."""
    tally = Tally(f"service answers (immediate, {backend})")

    @_settings(examples)
    @given(answer=answers())
    def one(answer: tuple[int, dict[str, str], bytes]) -> None:
        tally.tried += 1
        status, headers, body = answer
        outcome: list[object] = []

        async def main() -> None:
            async with AsyncTracker(
                aicm_api_key=KEY,
                aicm_api_base="http://127.0.0.1:9",
                transport=_mock(status, headers, body),
            ) as tracker:
                # Three attempts, at most two waits of 5 s between them (a longer Retry-After
                # raises at once), and each mocked request answers at once.
                with anyio.fail_after(12):
                    try:
                        outcome.append(await tracker.track("openai", "svc", {"n": 1}))
                    except AicmError as exc:
                        expect_named(exc)
                        outcome.append(exc)

        anyio.run(main, backend=backend)
        if isinstance(outcome[0], AicmError):
            tally.refuse(outcome[0])
        else:
            tally.accepted += 1
            assert 200 <= status < 300, f"HTTP {status} taken as delivered"

    one()
    return tally


def fuzz_answers_queued(
    examples: int,
    backend: str = "asyncio",
    delivery_type: str = "mem_queue",
    workdir: Path | None = None,
) -> Tally:
    """Garbage answers to a queue (``mem_queue``, or ``persistent_queue`` with its files in
    ``workdir``), then good ones: the worker lives, and every record is accounted for
    (sent, dead-lettered, or still queued), never silently lost; a 2xx answer is never
    sent again."""
    if delivery_type == "persistent_queue" and workdir is None:
        raise ValueError("a persistent queue needs a workdir for its files")
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    tally = Tally(f"service answers ({delivery_type}, {backend})")
    good = _dumps({"results": [], "triggered_limits": {}})

    @_settings(examples)
    @given(answer=answers())
    def one(answer: tuple[int, dict[str, str], bytes]) -> None:
        tally.tried += 1
        status, headers, body = answer
        seen: list[int] = []
        sent_ids: list[str] = []

        def respond(request: httpx.Request) -> httpx.Response:
            seen.append(len(seen))
            sent_ids.extend(r["response_id"] for r in json.loads(request.content)["tracked"])
            if len(seen) == 1:
                return httpx.Response(status, headers=dict(headers), content=body)
            return httpx.Response(202, content=good, headers={"Content-Type": "application/json"})

        async def main() -> None:
            async with AsyncTracker(
                aicm_api_key=KEY,
                aicm_api_base="http://127.0.0.1:9",
                transport=httpx.MockTransport(respond),
                delivery_type=delivery_type,
                db_path=None if workdir is None else str(workdir / f"{uuid.uuid4().hex}.db"),
                batch_interval=0.005,
            ) as tracker:
                for n in range(3):
                    await tracker.track("openai", "svc", {"n": n})
                with anyio.fail_after(10):
                    left = await tracker.flush(0.5)
                health = tracker.health()
                assert health.worker_alive, health.last_error
                assert health.sent + health.dead_lettered + left == 3, health
                if 200 <= status < 300:
                    assert health.sent == 3, health
                    # Two requests may be in flight (the records can come in two batches),
                    # but no record answered 2xx is ever sent again.
                    assert len(sent_ids) == len(set(sent_ids)) == 3, (
                        f"a 2xx answer was sent again ({len(seen)} requests, {sent_ids})"
                    )
                await tracker.aclose(0.0)

        anyio.run(main, backend=backend)
        if 200 <= status < 300:
            tally.accepted += 1
        else:
            tally.rejected[f"HTTP {status // 100}xx"] += 1

    one()
    return tally


def fuzz_queue_file_bytes(examples: int, api_base: str, workdir: Path) -> Tally:
    """A queue file that is not one (random bytes, a damaged SQLite header): a
    ``QueueStoreError`` naming the file, which is left as it was."""
    from aicm import QueueStoreError

    tally = Tally("queue files")
    header = b"SQLite format 3\x00"

    @_settings(examples)
    @given(
        data=st.one_of(
            st.binary(min_size=1, max_size=4096), st.binary(max_size=4096).map(header.__add__)
        )
    )
    def one(data: bytes) -> None:
        tally.tried += 1
        path = workdir / f"fuzz-{uuid.uuid4().hex[:8]}.db"
        path.write_bytes(data)
        try:
            with Tracker(
                aicm_api_key=KEY,
                aicm_api_base=api_base,
                delivery_type="persistent_queue",
                db_path=str(path),
            ) as tracker:
                tracker.track("openai", "svc", {"n": 1})
                tally.accepted += 1  # SQLite took it (an empty or repairable file)
        except QueueStoreError as exc:
            expect_named(exc, str(path))
            _unchanged(path, data)
            tally.refuse(exc)
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").unlink()

    one()
    return tally


def _unchanged(path: Path, data: bytes) -> None:
    assert path.read_bytes() == data, f"{path}: a file that is not a queue was changed"


@contextlib.contextmanager
def fast_retries() -> Iterator[None]:
    """Short backoffs for the duration (the fuzzed trackers read them from the env)."""
    names = {"AICM_BACKOFF_BASE": "0.01", "AICM_BACKOFF_CAP": "0.05", "AICM_MAX_ATTEMPTS": "1"}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
