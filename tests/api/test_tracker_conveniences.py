"""Tracker defaults (customer key, context) and anonymisation, on both twins, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aicm import AsyncTracker, RecordError, SaltedHash, Tracker
from aicm._api.conveniences import anonymize
from aicm.collector import LocalCollector

SECRET_EMAIL = "jane.doe.unique-7f3a@example.test"
SECRET_NAME = "Jane Q. Doe-9c1e"


def payloads(collector: LocalCollector) -> list[dict[str, Any]]:
    """The /track records the collector stored, oldest first."""
    return collector.records("track")


def usage_with_secrets() -> dict[str, Any]:
    """Usage carrying an email (nested), a name, and numbers that must stay as they are."""
    return {
        "input_tokens": 12,
        "user": {"email": SECRET_EMAIL, "plan": "pro"},
        "messages": [{"author": SECRET_NAME, "tokens": 3}, {"author": SECRET_NAME, "tokens": 4}],
    }


def files_bytes(directory: Path) -> bytes:
    """Every byte of every file under ``directory`` (the queue file, its WAL and journal)."""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


@pytest.mark.anyio
async def test_customer_key_and_context_defaults_a_call_can_override(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """set_customer_key / set_context fill every call that names none; a call's own win."""
    async with AsyncTracker(**connection) as tracker:
        tracker.set_customer_key("acme")
        tracker.set_context({"env": "prod"})
        await tracker.track("openai", "gpt-5-mini", {"input_tokens": 1}, response_id="d1")
        await tracker.track(
            "openai",
            "gpt-5-mini",
            {"input_tokens": 2},
            response_id="d2",
            customer_key="globex",
            context={"env": "staging"},
        )
        tracker.set_customer_key(None)
        tracker.set_context(None)
        await tracker.track("openai", "gpt-5-mini", {"input_tokens": 3}, response_id="d3")
    by_id = {r["response_id"]: r for r in payloads(collector)}
    assert (by_id["d1"]["customer_key"], by_id["d1"]["context"]) == ("acme", {"env": "prod"})
    assert (by_id["d2"]["customer_key"], by_id["d2"]["context"]) == ("globex", {"env": "staging"})
    assert "customer_key" not in by_id["d3"]
    assert "context" not in by_id["d3"]


@pytest.mark.anyio
async def test_anonymised_fields_never_reach_the_queue_file_or_the_wire(
    collector: LocalCollector, connection: dict[str, str], tmp_path: Path
) -> None:
    """With anonymize_fields, neither the SQLite queue file nor the collector holds the values."""
    queue_dir = tmp_path / "queue"
    queue_dir.mkdir()
    usage = usage_with_secrets()
    async with AsyncTracker(
        delivery_type="persistent_queue",
        db_path=str(queue_dir / "queue.db"),
        batch_interval=30,  # the records wait in the file until flush()
        anonymize_fields=["user.email"],
        **connection,
    ) as tracker:
        public = {**usage, "messages": [{"author": "public-author", "tokens": 1}]}
        await tracker.track("openai", "gpt-5-mini", public, response_id="anon-1")
        await tracker.track(
            "openai", "gpt-5-mini", usage, response_id="anon-2", anonymize_fields=["author"]
        )
        on_disk = files_bytes(queue_dir)
        assert await tracker.flush(5) == 0
    (first, second) = sorted(payloads(collector), key=lambda r: r["response_id"])
    hashed_email = first["payload"]["user"]["email"]
    assert hashed_email.startswith("anon:")
    assert hashed_email.encode() in on_disk  # the file was read while it held the records
    assert SECRET_EMAIL.encode() not in on_disk
    assert SECRET_NAME.encode() not in on_disk
    assert first["payload"]["messages"][0]["author"] == "public-author"  # not asked for
    authors = {m["author"] for m in second["payload"]["messages"]}
    assert len(authors) == 1  # equal values stay equal
    assert SECRET_NAME not in authors
    assert second["payload"]["user"]["email"] == hashed_email
    assert first["payload"]["user"]["plan"] == "pro"
    assert first["payload"]["input_tokens"] == 12
    assert usage == usage_with_secrets()  # the caller's dict is untouched
    wire = str(payloads(collector))
    assert SECRET_EMAIL not in wire


def test_sync_tracker_anonymises_and_sets_defaults_on_the_memory_queue(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """The sync twin: defaults and a custom anonymizer apply on the queued fast path too."""
    with Tracker(delivery_type="mem_queue", **connection) as tracker:
        tracker.set_customer_key("initech")
        tracker.set_anonymize_fields(["email"])
        tracker.set_anonymizer(lambda value: "<redacted>")
        tracker.track("openai", "gpt-5-mini", {"email": SECRET_EMAIL, "n": 1})
        tracker.track(
            "openai",
            "gpt-5-mini",
            {"email": SECRET_EMAIL, "n": 2},
            anonymizer=lambda value: value[:4] + "***",
        )
        assert tracker.flush(5) == 0
    records = sorted(payloads(collector), key=lambda r: r["payload"]["n"])
    assert [r["payload"]["email"] for r in records] == ["<redacted>", "jane***"]
    assert {r["customer_key"] for r in records} == {"initech"}


@pytest.mark.anyio
async def test_a_failing_anonymizer_is_a_record_error_and_nothing_is_sent(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """An anonymizer that raises fails the call with RecordError naming the field."""

    def broken(value: Any) -> Any:
        raise ValueError("no")

    async with AsyncTracker(anonymize_fields=["user.email"], anonymizer=broken, **connection) as t:
        with pytest.raises(RecordError, match=r"usage\.user\.email"):
            await t.track("openai", "gpt-5-mini", usage_with_secrets())
    assert payloads(collector) == []


def test_bad_options_are_refused_at_the_call_site() -> None:
    """A bare string for anonymize_fields, a non-callable anonymizer, an empty customer key."""
    with pytest.raises(TypeError, match="not one string"):
        AsyncTracker(aicm_api_key="k", anonymize_fields="email")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        AsyncTracker(aicm_api_key="k", anonymizer="sha256")  # type: ignore[arg-type]
    tracker = AsyncTracker(aicm_api_key="k")
    with pytest.raises(RecordError):
        tracker.set_customer_key("")
    with pytest.raises(RecordError):
        tracker.set_context(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_salted_hash_is_stable_per_salt_and_per_process() -> None:
    """Equal values hash alike in a process; a configured salt gives the same hash anywhere."""
    default = SaltedHash()
    assert default("x@y.test") == SaltedHash()("x@y.test")
    assert default("x@y.test") != default("z@y.test")
    assert default(None) is None
    salted = SaltedHash(salt="a-secret-salt-0123456789")
    assert salted("x@y.test") == SaltedHash(salt=b"a-secret-salt-0123456789")("x@y.test")
    assert salted("x@y.test") != default("x@y.test")
    with pytest.raises(ValueError, match="16 bytes"):
        SaltedHash(salt="short")


def test_paths_address_nested_fields_and_lists() -> None:
    """A dotted path walks mappings and lists; a bare name matches at any depth."""
    usage = {"a": {"b": 1, "c": 2}, "list": [{"b": 3}, {"b": 4}], "b": 5}
    marked = anonymize(usage, ["a.b"], lambda v: f"<{v}>")
    assert marked == {"a": {"b": "<1>", "c": 2}, "list": [{"b": 3}, {"b": 4}], "b": 5}
    everywhere = anonymize(usage, ["b"], lambda v: f"<{v}>")
    assert everywhere == {
        "a": {"b": "<1>", "c": 2},
        "list": [{"b": "<3>"}, {"b": "<4>"}],
        "b": "<5>",
    }
    assert anonymize(usage, ["missing.path"], str) is usage


def test_sync_tracker_anonymises_before_the_queue_file(
    collector: LocalCollector, connection: dict[str, str], tmp_path: Path
) -> None:
    """The sync twin on a persistent queue: the file holds only the hash, and so does the
    collector."""
    queue_dir = tmp_path / "queue"
    queue_dir.mkdir()
    with Tracker(
        delivery_type="persistent_queue",
        db_path=str(queue_dir / "queue.db"),
        batch_interval=30,
        anonymize_fields=["user.email", "author"],
        **connection,
    ) as tracker:
        tracker.track("openai", "gpt-5-mini", usage_with_secrets(), response_id="sync-anon")
        on_disk = files_bytes(queue_dir)
        assert tracker.flush(5) == 0
    (record,) = payloads(collector)
    hashed = record["payload"]["user"]["email"]
    assert hashed == SaltedHash()(SECRET_EMAIL)
    assert hashed.encode() in on_disk
    assert SECRET_EMAIL.encode() not in on_disk
    assert SECRET_NAME.encode() not in on_disk
    assert SECRET_EMAIL not in str(record)
    assert SECRET_NAME not in str(record)
