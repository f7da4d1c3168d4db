"""``aicm demo``: track a realistic mix of usage into a local collector and report it (layer 6).

Everything runs on this machine: the collector listens on a free loopback port, the
"providers" are small local stand-ins, and no account, key or network is needed.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx

DEMO_KEY = "demo-key"

# Unit prices in USD: per 1M tokens for chat models, per second for streaming sessions.
PRICES: dict[str, dict[str, float]] = {
    "gpt-5-mini": {"input_tokens": 0.25 / 1e6, "output_tokens": 2.00 / 1e6},
    "gpt-5": {"input_tokens": 1.25 / 1e6, "output_tokens": 10.00 / 1e6},
    "claude-sonnet": {"input_tokens": 3.00 / 1e6, "output_tokens": 15.00 / 1e6},
    "api.heygen.com/v2/streaming.list": {"duration": 0.0125},
}

CUSTOMERS = ("acme_corp", "globex", "initech")

CHAT_CONFIG = {
    "config_id": "demo-chat",
    "api_id": "demochat",
    "handling_config": {
        "tracked_methods": ["complete"],
        "request_fields": ["model"],
        "response_fields": [{"key": "usage", "path": "usage"}],
        "payload_mapping": {
            "config_id": "config_identifier",
            "service_id": "request_data.model",
            "timestamp": "timestamp",
            "usage": "response_data.usage",
            "client_customer_key": "client_customer_key",
        },
    },
}

HEYGEN_CONFIG = {
    "config_id": "api.heygen.com",
    "api_id": "api.heygen.com",
    "handling_config": {
        "tracked_methods": ["GET /v2/streaming.list"],
        "list_path": "sessions",
        "response_fields": [
            {"key": "session_id", "path": "session_id"},
            {"key": "duration", "path": "duration"},
        ],
        "payload_mapping": {
            "config_id": "config_identifier",
            "service_id": "service_id",
            "timestamp": "timestamp",
            "response_id": "response_data.session_id",
            "usage": "response_data.duration",
        },
    },
}


class DemoChat:
    """A stand-in for an async LLM client: answers at once and reports token usage."""

    async def complete(self, model: str, prompt: str) -> dict[str, Any]:
        """Pretend to run ``prompt`` on ``model``."""
        await anyio.lowlevel.checkpoint()
        words = len(prompt.split())
        return {
            "model": model,
            "text": "ok",
            "usage": {"input_tokens": 12 * words, "output_tokens": 40 + 3 * words},
        }


def _heygen(request: httpx.Request) -> httpx.Response:
    sessions = [
        {"session_id": "demo-session-1", "duration": 12},
        {"session_id": "demo-session-2", "duration": 20},
    ]
    return httpx.Response(200, json={"sessions": sessions})


def register(commands: Any) -> None:
    """Add ``demo`` to the command's subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="track a mix of usage into a local collector and print the report",
        description=__doc__,
    )
    parser.add_argument("--records", type=int, default=2000, help="records per queued tracker")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def _cost(service: str, usage: Any) -> float:
    prices = PRICES.get(service, {})
    if isinstance(usage, dict):
        return sum(float(v) * prices.get(k, 0.0) for k, v in usage.items() if _number(v))
    if _number(usage) and len(prices) == 1:
        return float(usage) * next(iter(prices.values()))
    return 0.0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run(args: argparse.Namespace) -> int:
    """Run the demo; print the report."""
    from aicm import AsyncCostManager, DeliveryType, RestUsageWrapper, Tracker
    from aicm.collector import LocalCollector

    rng = random.Random(7)
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCollector(configs=[CHAT_CONFIG, HEYGEN_CONFIG]) as collector,
    ):
        base = collector.api_base
        offered = 0

        def usage() -> dict[str, int]:
            return {"input_tokens": rng.randint(50, 5000), "output_tokens": rng.randint(20, 900)}

        # 1. Tracker, each delivery type.
        with Tracker(
            aicm_api_key=DEMO_KEY, aicm_api_base=base
        ) as tracker:  # IMMEDIATE: sent before track() returns
            for customer in CUSTOMERS:
                tracker.track("openai", "gpt-5", usage(), client_customer_key=customer)
                offered += 1
        with Tracker(
            delivery_type=DeliveryType.MEM_QUEUE, aicm_api_key=DEMO_KEY, aicm_api_base=base
        ) as tracker:
            for i in range(args.records):
                tracker.track("openai", "gpt-5-mini", usage(), client_customer_key=CUSTOMERS[i % 3])
                offered += 1
        db = str(Path(tmp) / "queue.db")
        with Tracker(
            delivery_type=DeliveryType.PERSISTENT_QUEUE,
            db_path=db,
            aicm_api_key=DEMO_KEY,
            aicm_api_base=base,
        ) as tracker:
            for i in range(max(1, args.records // 4)):
                tracker.track(
                    "anthropic", "claude-sonnet", usage(), client_customer_key=CUSTOMERS[i % 3]
                )
                offered += 1

        # 2. AsyncCostManager around an async client.
        async def chat() -> int:
            calls = 0
            async with AsyncCostManager(
                DemoChat(), aicm_api_key=DEMO_KEY, aicm_api_base=base
            ) as manager:
                for i in range(60):
                    with manager.scope(client_customer_key=CUSTOMERS[i % 3]):
                        await manager.client.complete("gpt-5-mini", "summarise this " * (i % 7 + 1))
                    calls += 1
            return calls

        offered += anyio.run(chat)

        # 3. The REST wrapper around an httpx.Client (the provider is an in-process stand-in).
        with (
            httpx.Client(transport=httpx.MockTransport(_heygen)) as http,
            RestUsageWrapper(
                http, base_url="https://api.heygen.com", aicm_api_key=DEMO_KEY, aicm_api_base=base
            ) as rest,
        ):
            for _ in range(3):  # the same two sessions each time: stored once (response_id)
                rest.get("/v2/streaming.list", params={"page": 1})
        offered += 2

        report = _report(collector.records("track"), collector.records("track_usage"))
        report["offered"] = offered
        report["seconds"] = round(time.perf_counter() - started, 2)
        report["duplicates_suppressed"] = (
            sum(v.get("duplicates", 0) for v in collector.stats()["records"].values())
            if "records" in collector.stats()
            else 0
        )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if report["stored"] == offered else 1


def _report(track: list[dict[str, Any]], usage: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"records": 0, "cost": 0.0})
    for r in track:
        key = (r["service_key"], r.get("client_customer_key") or "-")
        rows[key]["records"] += 1
        rows[key]["cost"] += _cost(r["service_key"], r["payload"])
    for r in usage:
        service = str(r.get("service_id") or r.get("config_id") or "?")
        key = (service, r.get("client_customer_key") or "-")
        rows[key]["records"] += 1
        rows[key]["cost"] += _cost(service, r.get("usage"))
    table = [
        {"service": s, "customer": c, "records": v["records"], "cost_usd": round(v["cost"], 6)}
        for (s, c), v in sorted(rows.items())
    ]
    return {
        "stored": len(track) + len(usage),
        "rows": table,
        "total_cost_usd": round(sum(r["cost_usd"] for r in table), 6),
    }


def _print(report: dict[str, Any]) -> None:
    rows = report["rows"]
    widths = [
        max([len("service")] + [len(r["service"]) for r in rows]),
        max([len("customer")] + [len(r["customer"]) for r in rows]),
    ]
    head = (
        f"{'service':<{widths[0]}}  {'customer':<{widths[1]}}  {'records':>8}  {'cost (USD)':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['service']:<{widths[0]}}  {r['customer']:<{widths[1]}}  "
            f"{r['records']:>8}  {r['cost_usd']:>12.6f}"
        )
    print("-" * len(head))
    print(
        f"{report['stored']} records stored of {report['offered']} tracked "
        f"(each exactly once), total ${report['total_cost_usd']:.6f}, "
        f"in {report['seconds']} s"
    )
