"""The pure side of usage limits: verifying signed payloads, reading claims, matching (no loop)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from aicm._core.limits import (
    LimitsPayloadError,
    TriggeredLimit,
    api_key_id_of,
    matching,
    parse_instant,
    vendor_of,
    verify_answer,
)
from aicm._io.answers import limits_in as _limits_in
from aicm._io.limits_book import LimitBook, SharedLimits
from tests.api.limits_support import keypair, limit, signed

KEY = "sk-test.abc123"


def test_a_signed_answer_gives_its_limits() -> None:
    """The answer's own public key verifies its payload; every claim field is read."""
    item = limit(
        KEY, service_key="openai::gpt-4o", customer_key="acme", expires_at="2030-01-01T00:00:00Z"
    )
    verified = verify_answer(signed([item]))
    (got,) = verified.limits
    assert got.limit_id == "lim-daily"
    assert got.hard
    assert got.api_key_id == "abc123"
    assert got.service_key == "openai::gpt-4o"
    assert got.customer_key == "acme"
    assert got.expires_at == parse_instant("2030-01-01T00:00:00+00:00")
    assert verified.key_id == "test-key"


def test_a_pinned_key_refuses_a_payload_signed_by_another() -> None:
    """A man in the middle re-signing with his key (and sending his public key) is caught
    only by a pinned key; without one his payload verifies."""
    forged = signed([limit(KEY)], signer=keypair("attacker"))
    assert verify_answer(forged).limits  # the answer's own key proves nothing
    with pytest.raises(LimitsPayloadError, match="Signature"):
        verify_answer(forged, pinned_key=keypair().public_pem)
    genuine = signed([limit(KEY)])
    assert verify_answer(genuine, pinned_key=keypair().public_pem).limits


def test_an_altered_payload_is_refused() -> None:
    """Changing the claims without re-signing breaks the signature."""
    import base64
    import json

    answer = signed([limit(KEY)])
    header, body, signature = answer["encrypted_payload"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["triggered_limits"] = []
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    answer["encrypted_payload"] = f"{header}.{forged_body}.{signature}"
    with pytest.raises(LimitsPayloadError):
        verify_answer(answer)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"encrypted_payload": None}, "no encrypted_payload"),
        ({"encrypted_payload": "not.a.jwt"}, "Decode"),
        ({"public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}, "key"),
        ({"public_key": None}, "no public_key"),
    ],
)
def test_malformed_answers_say_why(change: dict[str, object], reason: str) -> None:
    """Each malformed answer raises LimitsPayloadError naming its problem."""
    answer = {**signed([limit(KEY)]), **change}
    with pytest.raises(LimitsPayloadError) as info:
        verify_answer(answer)
    assert reason.lower() in info.value.reason.lower()


def test_wrong_issuer_and_bad_claims_are_refused() -> None:
    """Only ``aicm-api`` issues limits; a claim without a known threshold type is refused."""
    with pytest.raises(LimitsPayloadError, match="issuer"):
        verify_answer(signed([limit(KEY)], issuer="someone-else"))
    with pytest.raises(LimitsPayloadError, match="threshold_type"):
        verify_answer(signed([limit(KEY, threshold_type="maybe")]))
    with pytest.raises(LimitsPayloadError, match="limit_id"):
        verify_answer(signed([limit(KEY, limit_id=None)]))
    with pytest.raises(LimitsPayloadError, match="expires_at"):
        verify_answer(signed([limit(KEY, expires_at="next tuesday")]))
    with pytest.raises(LimitsPayloadError, match="not an object"):
        verify_answer(["not", "an", "answer"])


def test_matching_by_key_service_customer_and_time() -> None:
    """A limit applies to its API key, service and customer; null fields match any; an
    expired limit matches nothing."""
    now = time.time()
    mine = TriggeredLimit(event_id="e1", limit_id="l1", threshold_type="limit", api_key_id="k")
    other_key = TriggeredLimit(
        event_id="e2", limit_id="l2", threshold_type="limit", api_key_id="other"
    )
    service = TriggeredLimit(
        event_id="e3", limit_id="l3", threshold_type="limit", service_key="openai::gpt-4o"
    )
    customer = TriggeredLimit(
        event_id="e4", limit_id="l4", threshold_type="limit", customer_key="acme"
    )
    expired = TriggeredLimit(
        event_id="e5", limit_id="l5", threshold_type="limit", expires_at=now - 1
    )
    every = [mine, other_key, service, customer, expired]

    def ids(service_keys: tuple[str, ...], customer_key: str | None) -> set[str]:
        found = matching(
            every, service_keys=service_keys, customer_key=customer_key, api_key_id="k", now=now
        )
        return {limit.limit_id for limit in found}

    assert ids((), None) == {"l1"}
    assert ids(("openai::gpt-4o",), None) == {"l1", "l3"}
    assert ids(("openai::gpt-4o-mini",), "acme") == {"l1", "l4"}
    assert ids(("openai::gpt-4o",), "acme") == {"l1", "l3", "l4"}


def test_small_readers() -> None:
    """Key ids, vendors and instants read as the service writes them."""
    assert api_key_id_of("sk-live.prefix.0f1e") == "0f1e"
    # A key with no id after a dot is named by its fingerprint, as the collector names it.
    from aicm.collector._limits import api_key_id

    for dotless in ("no-dot", "ends-with-a-dot."):
        assert api_key_id_of(dotless) == api_key_id(dotless)
        assert dotless.strip(".") not in (api_key_id_of(dotless) or "")
    assert api_key_id("sk-live.prefix.0f1e") == "0f1e"
    assert api_key_id_of(None) is None
    assert vendor_of("google-genai") == "google"
    assert vendor_of("bedrock-runtime") == "amazon-bedrock"
    assert vendor_of("AsyncOpenAI") == "openai"
    assert vendor_of("asyncanthropic") == "anthropic"
    assert vendor_of("gemini") == "google"
    assert vendor_of("heygen") == "heygen"
    assert parse_instant("2026-01-01T00:00:00") == parse_instant("2026-01-01T00:00:00Z")
    assert parse_instant(12.5) == 12.5
    assert parse_instant(None) is None
    with pytest.raises(ValueError, match="not a time"):
        parse_instant(True)
    with pytest.raises(ValueError, match="not a time"):
        parse_instant(float("nan"))


def test_a_book_checks_an_answer_without_a_key_with_the_last_key_that_verified() -> None:
    """The service may send its public key only with GET /triggered-limits: a later answer
    without one is checked with that key; a forged one still fails."""
    book = LimitBook(
        api_root="http://svc/api/v1", key_fp="fp", api_key_id="abc123", pinned_key=None
    )
    first = signed([])
    assert book.absorb(first) is None  # verified, but nothing in force changed
    later = signed([limit(KEY)])
    del later["public_key"]
    assert book.absorb(later) is not None
    assert [x.limit_id for x in book.limits] == ["lim-daily"]
    forged = signed([], signer=keypair("attacker"))
    del forged["public_key"]
    assert book.absorb(forged) is None
    assert [x.limit_id for x in book.limits] == ["lim-daily"]


def test_the_last_answer_wins_even_with_a_token_signed_earlier() -> None:
    """A service may re-send a token it signed earlier for the same list (the collector
    keeps them): it is adopted, so a lifted limit is learned."""
    book = LimitBook(api_root="http://svc/api/v1", key_fp="fp", api_key_id=None, pinned_key=None)
    now = time.time()
    empty_then = signed([], iat=now - 5)
    assert book.absorb(signed([limit(KEY)], iat=now)) is not None
    assert book.absorb(empty_then) is not None
    assert book.limits == ()


def test_an_unsigned_empty_answer_clears_only_an_unpinned_book() -> None:
    """``{}`` says no limit is in force: believed without a pinned key, never with one (a man
    in the middle could send it to lift every limit)."""
    open_book = LimitBook(
        api_root="http://svc/api/v1", key_fp="a", api_key_id=None, pinned_key=None
    )
    pinned = LimitBook(
        api_root="http://svc/api/v1", key_fp="b", api_key_id=None, pinned_key=keypair().public_pem
    )
    for book in (open_book, pinned):
        book.absorb(signed([limit(KEY)]))
        assert len(book.limits) == 1
        assert book.absorb(None) is None
        assert len(book.limits) == 1
    assert open_book.absorb({}) == "{}"
    assert open_book.limits == ()
    assert pinned.absorb({}) is None
    assert len(pinned.limits) == 1
    assert pinned.absorb(signed([])) is not None  # a signed empty list lifts them
    assert pinned.limits == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"results": [], "triggered_limits": {"a": 1}}', {"a": 1}),
        ('{"triggered_limits" :\n {"a": [1, {"b": "}"}]}, "results": []}', {"a": [1, {"b": "}"}]}),
        ('{"results": [{"errors": ["\\"triggered_limits\\": x"]}]}', None),
        ('{"note": "triggered_limits", "results": []}', None),
        ('{"results": [], "triggered_limits": null}', None),
        ('{"results": [], "triggered_limits": {broken', None),
        ('{"results": []}', None),
        ('{"results": [], "triggered_limits": {}}', {}),
    ],
)
def test_the_fast_answer_path_reads_the_limits_alone(text: str, expected: object) -> None:
    """An answer whose records all succeeded is not parsed record by record, yet its
    top-level triggered_limits object is read exactly."""
    assert _limits_in(text) == expected


def test_limits_are_never_added_to_a_file_that_is_not_a_queue(tmp_path: Path) -> None:
    """SharedLimits writes only into a file of this aicm's queue schema: another program's
    SQLite file (or a new one) is left exactly as it was."""
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    before = foreign.read_bytes()
    shared = SharedLimits(foreign, api_root="http://svc/api/v1", key_fp="fp")
    shared.write('{"a": 1}', time.time())
    assert foreign.read_bytes() == before
    assert shared.read() is None
    missing = SharedLimits(tmp_path / "missing.db", api_root="x", key_fp="y")
    missing.write('{"a": 1}', time.time())
    assert missing.read() is None
    assert not (tmp_path / "missing.db").exists()
