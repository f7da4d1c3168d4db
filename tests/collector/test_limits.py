"""Usage limits at the collector: the service's limit API, evaluation, and signed answers."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest

from aicm.collector import LocalCollector
from aicm.collector._limits import LimitError, api_key_id, build_limit, period_bounds
from aicm.collector._signing import ISSUER

from .helpers import track_record, usage_record

#: Keys in the service's shape: the id is the part after the last dot.
KEY = "sk-secret-part.key-0001"
OTHER_KEY = "sk-other-part.key-0002"


def now() -> dt.datetime:
    """The time to stamp a record with: read at each use, so a run that crosses midnight
    UTC still stamps its records in the day the collector counts them in."""
    return dt.datetime.now(dt.timezone.utc)


# gpt-5-mini's default price: 2.5e-07 $ per input token, so 4,000,000 tokens cost $1.
DOLLAR_OF_TOKENS = 4_000_000


def current(
    tokens: int, *, customer: str | None = None, service: str = "openai::gpt-5-mini"
) -> dict[str, Any]:
    """A current /track record of ``tokens`` input tokens, stamped now."""
    record = track_record(
        service_key=service,
        payload={"input_tokens": tokens},
        timestamp=now().isoformat().replace("+00:00", "Z"),
    )
    del record["api_id"]
    if customer is not None:
        record["customer_key"] = customer
    return record


@pytest.fixture
async def api(collector: LocalCollector) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the collector's API root, sending ``KEY``."""
    async with httpx.AsyncClient(
        base_url=collector.url, headers={"Authorization": f"Bearer {KEY}"}
    ) as client:
        yield client


@pytest.fixture
def no_limits(collector: LocalCollector) -> LocalCollector:
    """The collector (cleared: no usage limits, never any)."""
    assert collector.limits() == []
    assert collector.triggered_limits(KEY) == {}
    return collector


def claims(envelope: dict[str, Any], public_key: str) -> dict[str, Any]:
    """The verified claims of a ``triggered_limits`` envelope."""
    assert set(envelope) == {"version", "key_id", "public_key", "encrypted_payload"}
    assert envelope["public_key"] == public_key
    decoded: dict[str, Any] = jwt.decode(
        envelope["encrypted_payload"], public_key, algorithms=["RS256"], issuer=ISSUER
    )
    return decoded


# -- pure parts ----------------------------------------------------------------------------


def test_a_key_id_is_the_part_after_the_last_dot_and_a_dotless_key_is_never_echoed() -> None:
    """api_key_id follows the service's keys; a key without a dot gets a fingerprint."""
    assert api_key_id("sk.abc.def-1") == "def-1"
    dotless = api_key_id("secret-without-dot")
    assert dotless
    assert "secret" not in dotless


def test_periods_are_utc_days_and_months() -> None:
    """A day runs midnight to midnight UTC; December's month ends on January 1st."""
    moment = dt.datetime(2025, 12, 31, 23, 30, tzinfo=dt.timezone.utc)
    assert period_bounds("day", moment) == (
        dt.datetime(2025, 12, 31, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    )
    assert period_bounds("month", moment) == (
        dt.datetime(2025, 12, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    )


def test_a_bad_limit_names_every_problem() -> None:
    """Every wrong field is named in one LimitError; a partial update keeps the rest."""
    with pytest.raises(LimitError) as info:
        build_limit({"threshold_type": "stop", "amount": -1, "period": "week", "colour": "red"})
    for fragment in ("threshold_type", "amount", "period", "colour: unknown field"):
        assert fragment in str(info.value)
    with pytest.raises(LimitError, match="amount: required"):
        build_limit({"threshold_type": "limit", "period": "day"})
    base = build_limit({"threshold_type": "alert", "amount": "2.50", "period": "month"})
    changed = build_limit({"amount": 3}, base=base)
    assert (changed.uuid, changed.threshold_type, changed.period) == (base.uuid, "alert", "month")
    assert changed.out()["amount"] == 3


# -- the service's limit API --------------------------------------------------------------


@pytest.mark.anyio
async def test_limits_are_created_listed_changed_and_removed_as_the_service_does(
    api: httpx.AsyncClient, no_limits: LocalCollector
) -> None:
    """POST 201, GET list and one, PUT changes only what it names, DELETE 204 then 404;
    the answers parse as the service SDK's own models."""
    models = pytest.importorskip("aicostmanager.models")
    created = await api.post(
        "/usage-limits/",
        json={"threshold_type": "limit", "amount": "1.5", "period": "day", "client": "acme"},
    )
    assert created.status_code == 201, created.text
    limit = models.UsageLimitOut.model_validate(created.json())
    assert (limit.client, limit.amount, limit.active) == ("acme", 1.5, True)
    listed = (await api.get("/usage-limits/")).json()
    assert [x["uuid"] for x in listed] == [limit.uuid]
    changed = await api.put(f"/usage-limits/{limit.uuid}/", json={"amount": 2})
    assert (changed.json()["amount"], changed.json()["client"]) == (2, "acme")
    progress = (await api.get("/usage-limits/progress/")).json()
    (row,) = [models.UsageLimitProgressOut.model_validate(p) for p in progress]
    assert (row.current_spend, row.remaining_amount) == (0, 2)
    bad = await api.put(f"/usage-limits/{limit.uuid}/", json={"period": "week"})
    assert bad.status_code == 400
    assert "period" in bad.json()["detail"]
    assert (await api.delete(f"/usage-limits/{limit.uuid}/")).status_code == 204
    assert (await api.get(f"/usage-limits/{limit.uuid}/")).status_code == 404
    assert (await api.delete(f"/usage-limits/{limit.uuid}/")).status_code == 404


def test_without_limits_answers_carry_an_empty_triggered_limits() -> None:
    """A collector that never held a limit answers ``{}``; once one existed, a signed list
    (empty after the limit is removed), so an SDK learns the limit is gone."""
    with LocalCollector() as fresh:
        post = {"headers": {"Authorization": f"Bearer {KEY}"}, "json": {"tracked": [current(1)]}}
        assert httpx.post(fresh.url + "/track", **post).json()["triggered_limits"] == {}
        limit = fresh.add_limit(threshold_type="limit", amount=1, period="day")
        fresh.remove_limit(limit["uuid"])
        envelope = httpx.post(fresh.url + "/track", **post).json()["triggered_limits"]
        assert claims(envelope, fresh.public_key)["triggered_limits"] == []


@pytest.mark.anyio
async def test_a_limit_triggers_once_priced_usage_reaches_it(
    api: httpx.AsyncClient, no_limits: LocalCollector
) -> None:
    """Below the amount the signed list is empty; at it every ingest answer, and GET
    /triggered-limits, carry the event with the claims the service sends."""
    collector = no_limits
    limit = collector.add_limit(
        threshold_type="limit",
        amount=1,
        period="day",
        service_key="openai::gpt-5-mini",
        limit_message="daily budget",
    )
    first = (await api.post("/track", json={"tracked": [current(DOLLAR_OF_TOKENS // 2)]})).json()
    assert claims(first["triggered_limits"], collector.public_key)["triggered_limits"] == []
    other_service = current(DOLLAR_OF_TOKENS, service="openai::gpt-5")
    await api.post("/track", json={"tracked": [other_service]})  # another service: not counted
    assert claims(collector.triggered_limits(KEY), collector.public_key)["triggered_limits"] == []
    second = (await api.post("/track", json={"tracked": [current(DOLLAR_OF_TOKENS // 2)]})).json()
    (event,) = claims(second["triggered_limits"], collector.public_key)["triggered_limits"]
    _, end = period_bounds("day", dt.datetime.now(dt.timezone.utc))
    assert event == {
        "event_id": event["event_id"],
        "limit_id": limit["uuid"],
        "threshold_type": "limit",
        "amount": 1,
        "period": "day",
        "limit_context": None,
        "limit_message": "daily budget",
        "service_key": "openai::gpt-5-mini",
        "customer_key": None,
        "api_key_id": "key-0001",
        "triggered_at": event["triggered_at"],
        "expires_at": end.isoformat().replace("+00:00", "Z"),
    }
    usage = await api.post("/track-usage", json={"usage_records": [usage_record()]})
    (again,) = claims(usage.json()["triggered_limits"], collector.public_key)["triggered_limits"]
    assert (again["event_id"], again["triggered_at"]) == (event["event_id"], event["triggered_at"])
    fetched = (await api.get("/triggered-limits")).json()["triggered_limits"]
    assert claims(fetched, collector.public_key)["triggered_limits"] == [again]
    (progress,) = collector.limits()
    assert (progress["current_spend"], progress["remaining_amount"]) == (1.0, 0.0)


@pytest.mark.anyio
async def test_limits_match_their_key_customer_and_expiry(
    api: httpx.AsyncClient, no_limits: LocalCollector
) -> None:
    """A limit for another key, another customer, or past its expires_at is not reported;
    an alert is reported like a limit; the older record form counts too."""
    collector = no_limits
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).isoformat()
    collector.add_limit(threshold_type="limit", amount=1, period="day", api_key_id="key-0002")
    collector.add_limit(threshold_type="limit", amount=1, period="day", customer_key="globex")
    collector.add_limit(threshold_type="limit", amount=1, period="day", expires_at=past)
    alert = collector.add_limit(
        threshold_type="alert", amount="0.5", period="month", customer_key="acme"
    )
    legacy = track_record(
        service_key="gpt-5-mini",
        payload={"input_tokens": DOLLAR_OF_TOKENS},
        client_customer_key="acme",
        timestamp=now().isoformat(),
    )
    answer = await api.post("/track", json={"tracked": [legacy]})
    events = claims(answer.json()["triggered_limits"], collector.public_key)["triggered_limits"]
    assert [(e["limit_id"], e["threshold_type"]) for e in events] == [(alert["uuid"], "alert")]
    for_other = claims(collector.triggered_limits(OTHER_KEY), collector.public_key)
    assert {e["api_key_id"] for e in for_other["triggered_limits"]} == {"key-0002"}
    assert len(for_other["triggered_limits"]) == 2  # its own limit, and the alert (any key)


@pytest.mark.anyio
async def test_usage_in_openai_names_counts_in_every_record_form(
    api: httpx.AsyncClient, no_limits: LocalCollector
) -> None:
    """A usage in OpenAI's own names (prompt_tokens / completion_tokens) is priced, and counts
    against a limit, in the current /track record, the older one, and a /track-usage record
    whose service_id is the model: 0.60 dollars each at gpt-4o-mini's prices."""
    collector = no_limits
    usage = {"prompt_tokens": 2_000_000, "completion_tokens": 500_000, "total_tokens": 2_500_000}
    stamp = now().isoformat().replace("+00:00", "Z")
    limit = collector.add_limit(threshold_type="limit", amount="1.8", period="day")
    records = [
        ("/track", "tracked", current(0, service="openai::gpt-4o-mini") | {"payload": usage}),
        (
            "/track",
            "tracked",
            track_record(service_key="gpt-4o-mini", payload=usage, timestamp=stamp),
        ),
        (
            "/track-usage",
            "usage_records",
            usage_record(
                config_id="openai-chat", service_id="gpt-4o-mini", usage=usage, timestamp=stamp
            ),
        ),
    ]
    spent = []
    for path, field, record in records:
        answer = (await api.post(path, json={field: [record]})).json()
        events = claims(answer["triggered_limits"], collector.public_key)["triggered_limits"]
        (progress,) = collector.limits()
        spent.append((round(progress["current_spend"], 6), [e["limit_id"] for e in events]))
    assert spent == [(0.6, []), (1.2, []), (1.8, [limit["uuid"]])]


def test_the_signing_key_and_limits_survive_a_restart(tmp_path: Path) -> None:
    """The key is made once in the data directory (owner-only) and read back with the limits."""
    data = tmp_path / "data"
    with LocalCollector(data_dir=data) as first:
        pem = first.public_key
        limit = first.add_limit(threshold_type="limit", amount=5, period="month")
    private = data / "signing_key.pem"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert (data / "public_key.pem").read_text() == pem
    with LocalCollector(data_dir=data) as second:
        assert second.public_key == pem
        assert [x["uuid"] for x in second.limits()] == [limit["uuid"]]


@pytest.mark.anyio
async def test_forged_limits_verify_only_against_the_key_sent_with_them(
    api: httpx.AsyncClient, no_limits: LocalCollector
) -> None:
    """The forge_limits fault signs with a throwaway key sent along: the token verifies
    with that key (an SDK trusting it is fooled) and never with the collector's own."""
    from aicm.collector import Faults

    collector = no_limits
    collector.add_limit(threshold_type="limit", amount=1, period="day")
    collector.set_faults(Faults(forge_limits=True))
    answer = await api.post("/track", json={"tracked": [current(DOLLAR_OF_TOKENS)]})
    envelope = answer.json()["triggered_limits"]
    assert envelope["public_key"] != collector.public_key
    (event,) = claims(envelope, envelope["public_key"])["triggered_limits"]
    assert event["api_key_id"] == "key-0001"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            envelope["encrypted_payload"], collector.public_key, algorithms=["RS256"], issuer=ISSUER
        )
    fetched = (await api.get("/triggered-limits")).json()["triggered_limits"]
    assert fetched["public_key"] == envelope["public_key"]
    collector.set_faults(Faults())
    honest = (await api.get("/triggered-limits")).json()["triggered_limits"]
    assert claims(honest, collector.public_key)["triggered_limits"] == [event]


@pytest.mark.anyio
async def test_injected_failures_spare_triggered_limits_and_keep_their_count(
    api: httpx.AsyncClient, no_limits: LocalCollector
) -> None:
    """GET /triggered-limits (every tracker sends it as it starts) meets no injected failure,
    drop or latency, and uses up none of fail_first: the ingest request after it does."""
    from aicm.collector import Faults

    collector = no_limits
    collector.set_faults(Faults(fail_first=1, latency=5.0, drop_rate=1.0))
    with anyio.fail_after(2):
        fetched = await api.get("/triggered-limits")
    assert fetched.status_code == 200
    collector.set_faults(Faults(fail_first=1))
    assert (await api.get("/triggered-limits")).status_code == 200
    assert (await api.post("/track", json={"tracked": [current(10)]})).status_code == 503
    faults = collector.stats()["faults"]
    assert (faults["fail_first"], faults["latency"], faults["drop"]) == (1, 0, 0)
