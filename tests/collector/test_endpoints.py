"""The wire contract over real HTTP: /track, /track-usage, /configs and the admin endpoints."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from aicm.collector import LocalCollector

from .helpers import API_KEY, CONFIGS, USER_AGENT, track_record, usage_record

pytestmark = pytest.mark.anyio


async def test_track_stores_records_and_answers_202_with_one_result_each(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """A /track batch is stored and answered 202 with a queued result per record, in order."""
    records = [track_record(), track_record(client_customer_key="cust", context={"k": "v"})]
    response = await client.post("/track", json={"tracked": records})
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "results": [{"response_id": r["response_id"], "status": "queued"} for r in records],
        "triggered_limits": {},
    }
    stored = collector.records("track")
    assert [{k: s[k] for k in r} for s, r in zip(stored, records, strict=True)] == records
    assert all(s["user_agent"] == USER_AGENT and s["received_at"] > 0 for s in stored)
    assert collector.count("track") == 2


async def test_track_marks_invalid_records_as_error_and_stores_the_rest(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """A record with missing fields or wrong types gets status error; the batch is still 202."""
    good = track_record()
    bad = track_record(payload="not an object")
    del bad["service_key"]
    response = await client.post("/track", json={"tracked": [bad, good]})
    assert response.status_code == 202
    first, second = response.json()["results"]
    assert first["status"] == "error"
    assert first["response_id"] == bad["response_id"]
    assert "missing field 'service_key'" in first["errors"]
    assert any("payload" in e for e in first["errors"])
    assert second == {"response_id": good["response_id"], "status": "queued"}
    assert [r["response_id"] for r in collector.records("track")] == [good["response_id"]]


async def test_track_usage_stores_free_form_records(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """/track-usage stores every field of its records, usage and context as JSON."""
    records = [
        usage_record(),
        usage_record(client_customer_key="c", context={"a": [1, 2]}, base_url="https://x"),
        usage_record(usage=20, custom_field={"nested": True}),
    ]
    response = await client.post("/track-usage", json={"usage_records": records})
    assert response.status_code == 202
    assert [r["status"] for r in response.json()["results"]] == ["queued"] * 3
    assert response.json()["triggered_limits"] == {}
    stored = collector.records("track_usage")
    assert [{k: s[k] for k in r} for s, r in zip(stored, records, strict=True)] == records
    assert collector.records("track") == []


async def test_track_usage_without_response_id_is_an_error(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """A /track-usage record without response_id gets status error, the others are stored."""
    nameless = usage_record()
    del nameless["response_id"]
    response = await client.post("/track-usage", json={"usage_records": [nameless, usage_record()]})
    assert response.status_code == 202
    results = response.json()["results"]
    assert results[0] == {
        "response_id": None,
        "status": "error",
        "errors": ["missing field 'response_id'"],
    }
    assert results[1]["status"] == "queued"
    assert collector.count("track_usage") == 1


async def test_a_repeated_response_id_is_stored_once_and_counted_as_duplicate(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """The same event sent twice (and twice in one batch) is stored once, always answered queued."""
    record = track_record()
    first = await client.post("/track", json={"tracked": [record, record]})
    second = await client.post("/track", json={"tracked": [record]})
    assert [r["status"] for r in first.json()["results"]] == ["queued", "queued"]
    assert second.json()["results"] == [{"response_id": record["response_id"], "status": "queued"}]
    assert collector.count("track") == 1
    assert collector.stats()["records"]["track"] == {
        "received": 3,
        "stored": 1,
        "duplicates": 2,
        "errors": 0,
    }


async def test_concurrent_requests_with_the_same_events_store_each_once(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """Twenty requests at once, half repeating one event, store each event once."""
    shared = track_record()
    statuses: list[int] = []

    async def send(i: int) -> None:
        record = shared if i % 2 else track_record()
        response = await client.post("/track", json={"tracked": [record]})
        statuses.append(response.status_code)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(send, i)
    assert statuses == [202] * 20
    assert collector.count("track") == 11
    assert collector.stats()["records"]["track"]["duplicates"] == 9


async def test_the_same_response_id_under_another_service_is_a_new_event(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """Dedup is per service: service_key for /track, service_id else config_id for /track-usage."""
    rid = "shared-id"
    await client.post(
        "/track",
        json={
            "tracked": [
                track_record(response_id=rid, service_key="openai::a"),
                track_record(response_id=rid, service_key="openai::b"),
            ]
        },
    )
    await client.post(
        "/track-usage",
        json={
            "usage_records": [
                usage_record(response_id=rid, service_id="svc-1"),
                usage_record(response_id=rid, service_id="svc-2"),
                usage_record(response_id=rid, service_id="svc-2"),
                {"config_id": "cfg-x", "response_id": rid},
                {"config_id": "cfg-x", "response_id": rid},
            ]
        },
    )
    assert collector.count("track") == 2
    assert collector.count("track_usage") == 3
    assert collector.stats()["records"]["track_usage"]["duplicates"] == 2


async def test_configs_lists_the_service_configs_with_a_strong_etag(
    client: httpx.AsyncClient,
) -> None:
    """GET /configs answers the configs and triggered_limits with a strong (unweakened) ETag."""
    response = await client.get("/configs")
    assert response.status_code == 200
    assert response.json() == {"service_configs": CONFIGS, "triggered_limits": {}}
    etag = response.headers["etag"]
    assert etag.startswith('"')
    assert not etag.startswith("W/")


async def test_configs_answers_304_when_if_none_match_holds_the_etag(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """If-None-Match with the current ETag gets 304 and an empty body; new configs a new ETag."""
    etag = (await client.get("/configs")).headers["etag"]
    cached = await client.get("/configs", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    assert (await client.get("/configs", headers={"If-None-Match": '"other"'})).status_code == 200
    collector.set_configs([{"config_id": "new", "api_id": "new"}])
    changed = await client.get("/configs", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert collector.stats()["requests"]["configs"] == {"200": 3, "304": 1}


async def test_configs_filters_by_api_id(client: httpx.AsyncClient) -> None:
    """?api_id= keeps only that API's configs, with an ETag of its own."""
    everything = await client.get("/configs")
    response = await client.get("/configs", params={"api_id": "openai"})
    assert [c["config_id"] for c in response.json()["service_configs"]] == ["cfg-openai"]
    assert response.headers["etag"] != everything.headers["etag"]
    unknown = await client.get("/configs", params={"api_id": "nobody"})
    assert unknown.json()["service_configs"] == []


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"usage_records": []}',
        b'{"tracked": "x"}',
        b"",
        b'{"tracked": [{"api_id": "\\ud800"}]}',
    ],
)
async def test_a_bad_body_is_answered_400_with_detail(
    client: httpx.AsyncClient, collector: LocalCollector, body: bytes
) -> None:
    """Bad JSON or a wrong top-level shape gets 400 and {"detail": ...}; nothing is stored."""
    response = await client.post(
        "/track", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert collector.count("track") == 0


async def test_more_than_1000_records_are_refused(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """A batch of 1001 records gets 413 with a detail; exactly 1000 are accepted."""
    too_many = [track_record() for _ in range(1001)]
    response = await client.post("/track", json={"tracked": too_many})
    assert response.status_code == 413
    assert "1000" in response.json()["detail"]
    assert collector.count("track") == 0
    accepted = await client.post("/track", json={"tracked": too_many[:1000]})
    assert accepted.status_code == 202
    assert collector.count("track") == 1000


async def test_unknown_paths_and_methods_get_json_errors(client: httpx.AsyncClient) -> None:
    """An unknown path is a JSON 404 and a wrong method a JSON 405."""
    missing = await client.get("/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}
    wrong = await client.get("/track")
    assert wrong.status_code == 405
    assert "detail" in wrong.json()


async def test_stats_count_requests_user_agents_and_auth_headers_without_keys(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """Stats count requests by endpoint and status and note the User-Agent, never the key."""
    await client.post("/track", json={"tracked": [track_record()]})
    await client.post("/track", content=b"{")
    async with httpx.AsyncClient(base_url=collector.url) as anonymous:
        await anonymous.get("/configs", headers={"User-Agent": "other/1"})
    stats = collector.stats()
    assert stats["requests"]["track"] == {"202": 1, "400": 1}
    assert stats["requests"]["configs"] == {"200": 1}
    assert stats["last_user_agent"] == "other/1"
    assert stats["user_agents"] == ["aicm-sdk/0.1.0", "other/1"]
    assert stats["auth_header_seen"] is True
    assert stats["requests_without_auth"] == 1
    assert API_KEY not in json.dumps(stats)


async def test_the_api_key_is_never_stored(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """Neither the Authorization header nor the key reaches the SQLite file."""
    await client.post("/track", json={"tracked": [track_record()]})
    await client.post("/track-usage", json={"usage_records": [usage_record()]})
    content = await anyio.Path(collector.db_path).read_bytes()
    content += await anyio.Path(collector.db_path + "-wal").read_bytes()
    assert API_KEY.encode() not in content
    assert b"Bearer" not in content


async def test_admin_records_stats_and_clear(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """/_collector/records, /stats and /clear show and forget what was received."""
    record = track_record()
    await client.post("/track", json={"tracked": [record]})
    await client.post("/track-usage", json={"usage_records": [usage_record()]})
    listed = (await admin.get("/_collector/records", params={"kind": "track"})).json()
    assert listed["count"] == 1
    assert listed["records"][0]["payload"] == record["payload"]
    usage = await admin.get("/_collector/records", params={"kind": "track-usage"})
    assert usage.json()["count"] == 1
    assert (await admin.get("/_collector/records", params={"kind": "x"})).status_code == 400
    stats = (await admin.get("/_collector/stats")).json()
    assert stats == collector.stats()
    assert stats["records"]["track"]["stored"] == 1
    assert (await admin.post("/_collector/clear")).json() == {"cleared": True}
    assert collector.count("track") == collector.count("track_usage") == 0
    assert collector.stats()["requests"]["track"] == {}
    assert (await admin.get("/_collector/health")).json() == {"status": "ok"}


async def test_admin_faults_replace_the_faults_at_runtime(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """POST /_collector/faults puts new faults in force; bad options get 400."""
    answer = await admin.post("/_collector/faults", json={"fail_first": 1, "failure_status": 500})
    assert answer.status_code == 200
    assert answer.json()["fail_first"] == 1
    assert collector.faults.fail_first == 1
    assert (await client.get("/configs")).status_code == 500
    assert (await client.get("/configs")).status_code == 200
    bad = await admin.post("/_collector/faults", json={"failure_rate": 2})
    assert bad.status_code == 400
    assert "failure_rate" in bad.json()["detail"]
    assert (await admin.post("/_collector/faults", json={"nope": 1})).status_code == 400
    assert (await admin.post("/_collector/faults", json={})).json()["fail_first"] == 0
    assert (await admin.get("/_collector/faults")).json()["failure_rate"] == 0.0


async def test_admin_configs_replace_the_configs(
    client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """POST /_collector/configs serves new configs; malformed ones get 400."""
    new = [{"config_id": "c9", "api_id": "a9"}]
    answer = await admin.post("/_collector/configs", json={"service_configs": new})
    assert answer.status_code == 200
    served = (await client.get("/configs")).json()["service_configs"]
    assert [c["config_id"] for c in served] == ["c9"]
    assert (await admin.post("/_collector/configs", json=[{"api_id": 1}])).status_code == 400
