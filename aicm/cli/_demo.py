"""``aicm demo``: track a realistic mix of usage into a local collector and report it (layer 6).

Everything runs on this machine: the collector listens on a free loopback port, the
"providers" are small local stand-ins, and no account, key or network is needed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from operator import attrgetter
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx

from ._common import EXIT_FAILURE, EXIT_OK, CommandError, add_command, add_number
from ._output import ProgressBar, progress, say
from ._report import (
    UsageEvent,
    add_format_arguments,
    emit,
    read_collector_db,
    report_prices,
    summarise,
    usage_events,
)

DEMO_KEY = "demo-key"

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

    def __init__(self) -> None:
        self.usages: list[dict[str, int]] = []

    async def complete(self, model: str, prompt: str) -> dict[str, Any]:
        """Pretend to run ``prompt`` on ``model``."""
        await anyio.lowlevel.checkpoint()
        words = len(prompt.split())
        usage = {"input_tokens": 12 * words, "output_tokens": 40 + 3 * words}
        self.usages.append(usage)
        return {"model": model, "text": "ok", "usage": usage}


HEYGEN_SESSIONS = (
    {"session_id": "demo-session-1", "duration": 12},
    {"session_id": "demo-session-2", "duration": 20},
)
HEYGEN_SERVICE = "api.heygen.com/v2/streaming.list"


def _heygen(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"sessions": list(HEYGEN_SESSIONS)})


def register(commands: Any) -> None:
    """Add ``demo`` to the command's subparsers."""
    parser = add_command(
        commands,
        "demo",
        "track a mix of usage into a local collector and print what it costs",
        "Track a realistic mix of usage through every part of the SDK into a local "
        "collector, then print what was stored and what it costs. Everything runs on "
        "this machine: no account, key or network is needed.",
        run=run,
        json=None,  # with --csv, from add_format_arguments
    )
    add_number(parser, "--records", int, 2000, "N", "records per queued tracker")
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help="keep the collector's records in this new file (then: aicm report --db PATH)",
    )
    add_format_arguments(parser)


def expected_records(records: int) -> int:
    """How many records the demo tracks with ``--records N`` (the wrapped SDKs' included)."""
    return len(CUSTOMERS) + records + max(1, records // 4) + CHAT_CALLS + 2 + 2 * SDK_CALLS


def _track_everything(base: str, records: int, tracked: list[UsageEvent], bar: ProgressBar) -> bool:
    """Track through every part of the SDK; note each event in ``tracked`` as it goes, and
    count it on ``bar``."""
    from aicm import AsyncCostManager, DeliveryType, RestUsageWrapper, Tracker

    rng = random.Random(7)

    def usage() -> dict[str, int]:
        return {"input_tokens": rng.randint(50, 5000), "output_tokens": rng.randint(20, 900)}

    def note(service: str, customer: str, amounts: Any) -> None:
        tracked.append(UsageEvent(service=service, customer=customer, day="", usage=amounts))
        if len(tracked) % 500 == 0:
            bar.update(completed=len(tracked))

    def phase(words: str) -> None:
        bar.update(completed=len(tracked), description=words)

    # 1. Tracker, each delivery type. IMMEDIATE: sent before track() returns.
    phase("Tracker, immediate")
    with Tracker(aicm_api_key=DEMO_KEY, aicm_api_base=base) as tracker:
        for customer in CUSTOMERS:
            u = usage()
            tracker.track("openai", "gpt-5", u, client_customer_key=customer)
            note("openai::gpt-5", customer, u)
    phase("Tracker, mem_queue")
    with Tracker(
        delivery_type=DeliveryType.MEM_QUEUE, aicm_api_key=DEMO_KEY, aicm_api_base=base
    ) as tracker:
        for i in range(records):
            u = usage()
            tracker.track("openai", "gpt-5-mini", u, client_customer_key=CUSTOMERS[i % 3])
            note("openai::gpt-5-mini", CUSTOMERS[i % 3], u)
        phase("Tracker, mem_queue: delivering")
    phase("Tracker, persistent_queue")
    with (
        tempfile.TemporaryDirectory() as tmp,
        Tracker(
            delivery_type=DeliveryType.PERSISTENT_QUEUE,
            db_path=str(Path(tmp) / "queue.db"),
            aicm_api_key=DEMO_KEY,
            aicm_api_base=base,
        ) as tracker,
    ):
        for i in range(max(1, records // 4)):
            u = usage()
            tracker.track("anthropic", "claude-sonnet-4-5", u, client_customer_key=CUSTOMERS[i % 3])
            note("anthropic::claude-sonnet-4-5", CUSTOMERS[i % 3], u)
        phase("Tracker, persistent_queue: delivering")

    # 2. AsyncCostManager around an async client.
    phase("AsyncCostManager")

    async def chat() -> None:
        client = DemoChat()
        async with AsyncCostManager(client, aicm_api_key=DEMO_KEY, aicm_api_base=base) as manager:
            for i in range(CHAT_CALLS):
                with manager.scope(client_customer_key=CUSTOMERS[i % 3]):
                    await manager.client.complete("gpt-5-mini", "summarise this " * (i % 7 + 1))
                note("gpt-5-mini", CUSTOMERS[i % 3], client.usages[-1])

    anyio.run(chat)

    # 3. The REST wrapper around an httpx.Client (the provider is an in-process stand-in).
    phase("RestUsageWrapper")
    with (
        httpx.Client(transport=httpx.MockTransport(_heygen)) as http,
        RestUsageWrapper(
            http, base_url="https://api.heygen.com", aicm_api_key=DEMO_KEY, aicm_api_base=base
        ) as rest,
    ):
        for _ in range(3):  # the same two sessions each time: stored once (response_id)
            rest.get("/v2/streaming.list", params={"page": 1})
    for session in HEYGEN_SESSIONS:
        note(HEYGEN_SERVICE, "-", {"duration": session["duration"]})

    # 4. The real openai and anthropic SDKs, wrapped with no config: the built-ins record
    #    them. Their HTTP goes to in-process stand-ins (no key, no network).
    phase("CostManager around openai and anthropic")
    return _track_sdk_clients(base, note)


# What the stand-ins answer: the usage objects of OpenAI and Anthropic, as they send them.
OPENAI_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 64, "audio_tokens": 0},
}
ANTHROPIC_USAGE = {
    "input_tokens": 800,
    "output_tokens": 250,
    "cache_creation_input_tokens": 2000,
    "cache_read_input_tokens": 0,
}
SDK_CALLS = 6
CHAT_CALLS = 60


def _openai_answer(request: Any) -> dict[str, Any]:
    body = json.loads(request.content)
    return {
        "id": f"chatcmpl-demo-{random.getrandbits(64):x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": f"{body['model']}-2024-07-18",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "ok"},
            }
        ],
        "usage": OPENAI_USAGE,
    }


def _anthropic_answer(request: Any) -> dict[str, Any]:
    body = json.loads(request.content)
    return {
        "id": f"msg_demo_{random.getrandbits(64):x}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": ANTHROPIC_USAGE,
    }


def _stand_in(default_client: type[Any], answer: Any) -> Any:
    """An HTTP client of the SDK's own httpx package that answers every request in-process."""
    import importlib

    base = next(c for c in default_client.__mro__ if c.__name__ == "Client")
    http = importlib.import_module(base.__module__.partition(".")[0])
    transport = http.MockTransport(lambda request: http.Response(200, json=answer(request)))
    return http.Client(transport=transport)


def _track_sdk_clients(base: str, note: Any) -> bool:
    """OpenAI and Anthropic clients wrapped by a CostManager with no config: False when the
    SDKs are not installed (nothing tracked)."""
    from aicm import CostManager

    try:
        import anthropic
        import openai
    except ImportError:  # the SDKs are not aicm's dependencies: this part needs them
        return False
    prompt: Any = [{"role": "user", "content": "Say hello"}]
    clients: list[tuple[Any, str, dict[str, Any], str, dict[str, Any]]] = [
        (
            openai.OpenAI(
                api_key="demo",
                base_url="https://api.openai.com/v1",
                http_client=_stand_in(openai.DefaultHttpxClient, _openai_answer),
            ),
            "chat.completions",
            {"model": "gpt-4o-mini"},
            "openai::gpt-4o-mini-2024-07-18",
            OPENAI_USAGE,
        ),
        (
            anthropic.Anthropic(
                api_key="demo",
                base_url="https://api.anthropic.com",
                http_client=_stand_in(anthropic.DefaultHttpxClient, _anthropic_answer),
            ),
            "messages",
            {"model": "claude-sonnet-4-5", "max_tokens": 64},
            "anthropic::claude-sonnet-4-5",
            ANTHROPIC_USAGE,
        ),
    ]
    for sdk_client, resource, options, service, answered in clients:
        with sdk_client, CostManager(sdk_client, aicm_api_key=DEMO_KEY, aicm_api_base=base) as cm:
            create = attrgetter(f"{resource}.create")(cm.client)
            for i in range(SDK_CALLS):
                with cm.scope(client_customer_key=CUSTOMERS[i % 3]):
                    create(messages=prompt, **options)
                note(service, CUSTOMERS[i % 3], answered)
    return True


def run(args: argparse.Namespace) -> int:
    """Run the demo; print the cost report of what the collector stored."""
    from aicm.collector import LocalCollector

    prices = report_prices(args.prices)
    if args.db is not None and Path(args.db).exists():
        raise CommandError(f"{args.db} exists: give --db a new file")
    started = time.perf_counter()
    tracked: list[UsageEvent] = []
    with LocalCollector(configs=[CHAT_CONFIG, HEYGEN_CONFIG], db_path=args.db) as collector:
        with progress("tracking", expected_records(args.records)) as bar:
            sdks = _track_everything(collector.api_base, args.records, tracked, bar)
        # The same path as `aicm report`: the collector's file, read-only.
        track, usage = read_collector_db(collector.db_path)
        records = collector.stats().get("records", {})
        duplicates = sum(v.get("duplicates", 0) for v in records.values())
    by = ("service", "customer")
    events = usage_events(track, usage)
    with progress("pricing", len(events) + len(tracked)) as bar:
        report = summarise(bar.track(events), prices, by=by)
        expected = summarise(bar.track(tracked), prices, by=by)
    stored = report["records"]
    ok = stored == len(tracked) and report["rows"] == expected["rows"]
    seconds = round(time.perf_counter() - started, 2)
    emit(
        args,
        report,
        {
            "ok": ok,
            "offered": len(tracked),
            "stored": stored,
            "duplicates_suppressed": duplicates,
            "seconds": seconds,
            "tracked": expected["rows"],
            "report": report,
            "prices": prices,
        },
    )
    if not args.json and not args.csv:
        verdict = (
            ("each exactly once", "green") if ok else ("MISMATCH with what was tracked", "red")
        )
        say(
            f"{stored:,} records stored of {len(tracked):,} tracked (",
            verdict,
            f"; {duplicates} repeats suppressed), in {seconds} s",
        )
        if args.db:
            say(f"records kept in {args.db}: aicm report --db {args.db}")
    if not sdks:
        say(
            "the openai and anthropic SDKs are not installed, so the demo tracked no wrapped "
            "SDK calls: pip install 'aicm-sdk[demo]' to see them",
            stream=sys.stderr,
        )
    return EXIT_OK if ok else EXIT_FAILURE
