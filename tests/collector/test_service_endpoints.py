"""The collector's management endpoints over raw HTTP: pagination, refusals, partial PUT."""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from aicm.collector import LocalCollector
from tests.service_api_support import price, track

AUTH = {"Authorization": "Bearer sk-test"}


@pytest.fixture
def http(collector: LocalCollector) -> Iterator[httpx.Client]:
    """A plain httpx client on the collector's API root."""
    with httpx.Client(base_url=f"{collector.api_base}/api/v1", headers=AUTH) as client:
        yield client


def test_pages_link_both_ways_with_absolute_urls(
    collector: LocalCollector, http: httpx.Client
) -> None:
    """limit/offset pages carry absolute next and previous links that lead on and back."""
    for n in range(5):
        track(collector, customer="raw-pages", input_tokens=n + 1, output_tokens=0)
    first = http.get("/usage/events/", params={"customer_key": "raw-pages", "limit": 2}).json()
    assert first["count"] == 5
    assert first["previous"] is None
    second = httpx.get(first["next"], headers=AUTH).json()
    assert second["previous"].startswith(collector.api_base)
    last = httpx.get(httpx.get(first["next"], headers=AUTH).json()["next"], headers=AUTH).json()
    assert last["next"] is None
    tokens = [e["usage"]["input_tokens"] for p in (first, second, last) for e in p["results"]]
    assert sorted(tokens) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("path", "params", "needle"),
    [
        ("/usage/events/", {"limit": "0"}, "limit"),
        ("/usage/events/", {"offset": "x"}, "offset"),
        ("/usage/events/", {"start_date": "June"}, "start_date"),
        ("/usage/rollups/", {"granularity": "weekly"}, "granularity"),
        ("/webhooks/", {"active_only": "maybe"}, "active_only"),
        ("/services/", {}, "vendor"),
    ],
)
def test_bad_query_parameters_are_422_naming_them(
    http: httpx.Client, path: str, params: dict[str, str], needle: str
) -> None:
    """A filter the collector cannot read is refused with a detail naming it."""
    answer = http.get(path, params=params)
    assert answer.status_code == 422
    assert needle in answer.json()["detail"]


def test_bodies_are_checked_and_put_is_partial(http: httpx.Client) -> None:
    """Not JSON: 400; unknown or wrong fields: 422 naming each; PUT keeps what it omits."""
    assert http.post("/customers/", content=b"{nope").status_code == 400
    refused = http.post("/customers/", json={"customer_key": 7, "colour": "red"})
    assert refused.status_code == 422
    assert "colour: unknown field" in refused.json()["detail"]
    assert "customer_key: wrong type" in refused.json()["detail"]
    created = http.post("/customers/", json={"customer_key": "raw-put", "name": "Raw"})
    assert created.status_code == 201
    uuid = created.json()["uuid"]
    changed = http.put(f"/customers/{uuid}/", json={"email": "raw@put.test"}).json()
    assert (changed["name"], changed["email"]) == ("Raw", "raw@put.test")
    deleted = http.delete(f"/customers/{uuid}/")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert http.get(f"/customers/{uuid}/").status_code == 404


def test_boolean_filters_arrive_as_true_or_false(http: httpx.Client) -> None:
    """``active_only=False`` lists every webhook; ``True`` only the active ones."""
    http.post("/webhooks/", json={"url": "https://h.test/on", "secret": "s1"})
    http.post("/webhooks/", json={"url": "https://h.test/off", "secret": "s2", "active": False})
    every = http.get("/webhooks/", params={"active_only": "False"}).json()
    active = http.get("/webhooks/", params={"active_only": "True"}).json()
    assert len(every["endpoints"]) == 2
    assert [w["url"] for w in active["endpoints"]] == ["https://h.test/on"]


def test_clear_forgets_the_api_objects(collector: LocalCollector, http: httpx.Client) -> None:
    """Clearing the collector forgets customers with the records."""
    http.post("/customers/", json={"customer_key": "raw-clear"})
    collector.clear()
    assert http.get("/customers/", params={"customer_key": "raw-clear"}).json()["count"] == 0


def test_a_custom_service_prices_its_usage(collector: LocalCollector, http: httpx.Client) -> None:
    """Usage of a custom service is priced through its mappings; one it cannot price
    (a mapping dividing by zero) costs nothing and breaks no endpoint."""
    dubber = {
        "cost_units": [{"name": "minute", "cost": "0.006", "unit": "minute"}],
        "mappings": [{"cost_unit": "minute", "field": "seconds", "divide_by": 60}],
    }
    broken = {
        "cost_units": [{"name": "x", "cost": 1, "unit": "x"}],
        "mappings": [{"cost_unit": "x", "field": "n", "divide_by": 0}],
    }
    for key, configuration in (("dubber", dubber), ("broken", broken)):
        created = http.post(
            "/custom-services/", json={"custom_service_key": key, "configuration": configuration}
        )
        assert created.status_code == 201
    at = "2025-07-01T12:00:00Z"
    tracked = [
        {
            "service_key": "studio::dubber",
            "response_id": "dub-1",
            "timestamp": at,
            "payload": {"seconds": 90},
        },
        {
            "service_key": "lab::broken",
            "response_id": "broken-1",
            "timestamp": at,
            "payload": {"n": 3},
        },
    ]
    answer = http.post("/track", json={"tracked": tracked}).json()
    assert [r["status"] for r in answer["results"]] == ["queued", "queued"]
    costs = http.get("/costs/", params={"response_id": "dub-1"}).json()["results"]
    assert [(c["cost_unit_id"], c["quantity"], c["cost"]) for c in costs] == [
        ("seconds", 90, 0.009)
    ]
    assert http.get("/costs/", params={"response_id": "broken-1"}).json()["count"] == 0
    assert http.get("/usage/events/").json()["count"] == 2


def test_a_cost_that_is_not_a_price_is_refused(http: httpx.Client) -> None:
    """A custom cost unit whose cost is not a number >= 0 is a 422 naming it."""
    bad = {"cost_units": [{"name": "m", "cost": "cheap", "unit": "m"}]}
    answer = http.post(
        "/custom-services/", json={"custom_service_key": "bad", "configuration": bad}
    )
    assert answer.status_code == 422
    assert "cost_units[0].cost" in answer.json()["detail"]


def test_api_objects_survive_a_restart_on_the_same_store(tmp_path: Path) -> None:
    """Customers, webhooks and custom services are in the SQLite store: a collector started
    again on the same database file and data directory answers with them, and still
    prices a custom service's usage by them."""
    db, data = tmp_path / "collector.sqlite3", tmp_path / "data"
    configuration = {"cost_units": [{"name": "page", "cost": "0.5", "unit": "page"}]}
    with (
        LocalCollector(db_path=db, data_dir=data) as first,
        httpx.Client(base_url=f"{first.api_base}/api/v1", headers=AUTH) as http,
    ):
        customer = http.post("/customers/", json={"customer_key": "kept", "name": "Kept"})
        hook = http.post("/webhooks/", json={"url": "https://h.test/k", "secret": "s"})
        service = http.post(
            "/custom-services/",
            json={"custom_service_key": "pager", "configuration": configuration},
        )
        renamed = http.put(f"/customers/{customer.json()['uuid']}/", json={"phone": "1"})
        assert renamed.status_code == 200
    with (
        LocalCollector(db_path=db, data_dir=data) as second,
        httpx.Client(base_url=f"{second.api_base}/api/v1", headers=AUTH) as http,
    ):
        customers = http.get("/customers/").json()["results"]
        hooks = http.get("/webhooks/").json()["endpoints"]
        got = http.get(f"/custom-services/{service.json()['uuid']}/").json()
        tracked = {
            "service_key": "ocr::pager",
            "response_id": "p-1",
            "timestamp": "2025-07-02T10:00:00Z",
            "payload": {"page": 4},
        }
        assert http.post("/track", json={"tracked": [tracked]}).status_code == 202
        costs = http.get("/costs/", params={"response_id": "p-1"}).json()["results"]
    assert customers == [renamed.json()]
    assert customers[0]["phone"] == "1"
    assert hooks == [hook.json()]
    assert got == service.json()
    assert [(c["cost_unit_id"], c["cost"]) for c in costs] == [("page", 2.0)]


def test_an_older_record_is_priced_under_its_vendors_key(http: httpx.Client) -> None:
    """The older /track record (api_id "openai_chat", a bare model) is the usage of
    "openai::<model>", as aicm report and the usage limits name it, and is priced so."""
    record = {
        "api_id": "openai_chat",
        "service_key": "gpt-5-mini",
        "response_id": "legacy-1",
        "timestamp": "2025-07-03T10:00:00Z",
        "payload": {"prompt_tokens": 1000, "completion_tokens": 100},
        "client_customer_key": "old-sdk",
    }
    assert http.post("/track", json={"tracked": [record]}).status_code == 202
    (event,) = http.get("/usage/events/", params={"customer_key": "old-sdk"}).json()["results"]
    costs = http.get("/costs/", params={"response_id": "legacy-1"}).json()["results"]
    assert event["service_id"] == "openai::gpt-5-mini"
    assert event["priced"] is True
    assert {c["provider_id"] for c in costs} == {"openai"}
    assert Decimal(str(math.fsum(c["cost"] for c in costs))) == price(1000, 100)
