"""``aicm costs`` and ``aicm usage``: what the service (or a local collector) computed (layer 6).

Both read the service's management API through [`CostManagerClient`][aicm.CostManagerClient]:
``costs`` sums the daily usage rollups by day, service and/or customer; ``usage`` lists the usage
events. The API key comes from ``AICM_API_KEY`` (or the INI file), never the command line;
``--api-base`` points at the service, or at ``aicm serve``.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from .._core.service_models import UsageEvent, UsageRollup
from ._common import (
    EXIT_OK,
    add_api_base,
    add_command,
    add_number,
    format_number,
    service_settings,
)
from ._output import print_json, show, table
from ._report import parse_by

__all__ = ["register", "summarise_rollups"]

NO_CUSTOMER = "-"


def summarise_rollups(rollups: Iterable[UsageRollup], by: Sequence[str]) -> dict[str, Any]:
    """Daily rollups grouped ``by`` day, service and/or customer (JSON-ready, sorted rows).

    Returns ``{"by", "cost_usd", "unpriced_events", "rows"}``; each row holds its
    dimensions, ``quantity``, ``cost_usd`` (exact decimal sums, given as numbers) and
    ``unpriced_events``: the events the service could not price, which ``cost_usd`` leaves
    out (a rollup says how many in its ``unpriced_events``, when it knows).
    """
    costs: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    quantities: dict[tuple[str, ...], float] = defaultdict(float)
    unpriced: dict[tuple[str, ...], int] = defaultdict(int)
    total = Decimal(0)
    for rollup in rollups:
        values = {
            "day": rollup.date[:10],
            "service": rollup.service_id,
            "customer": rollup.customer_key or NO_CUSTOMER,
        }
        key = tuple(values[d] for d in by)
        costs[key] += rollup.cost
        quantities[key] += rollup.quantity
        count = rollup.extra.get("unpriced_events")
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            unpriced[key] += count
        total += rollup.cost
    rows = [
        {
            **dict(zip(by, key, strict=True)),
            "quantity": _plain(quantities[key]),
            "cost_usd": float(costs[key]),
            "unpriced_events": unpriced[key],
        }
        for key in sorted(costs)
    ]
    return {
        "by": list(by),
        "cost_usd": float(total),
        "unpriced_events": sum(unpriced.values()),
        "rows": rows,
    }


def _plain(amount: float) -> float | int:
    return int(amount) if amount.is_integer() and abs(amount) < 2**53 else amount


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _client(args: argparse.Namespace) -> Any:
    from .._sync.client import CostManagerClient

    return CostManagerClient(settings=service_settings(args))


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "customer_key": args.customer,
        "service_id": args.service,
        "start_date": args.start_date,
        "end_date": args.end_date,
    }


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_api_base(parser)
    parser.add_argument("--customer", metavar="KEY", help="only this customer_key")
    parser.add_argument("--service", metavar="KEY", help="only this service (vendor::model)")
    parser.add_argument("--start-date", type=_date, metavar="YYYY-MM-DD", help="from this day")
    parser.add_argument("--end-date", type=_date, metavar="YYYY-MM-DD", help="to this day")


def register(commands: Any) -> None:
    """Add ``costs`` and ``usage`` to the command's subparsers."""
    costs = add_command(
        commands,
        "costs",
        "cost by day, service and customer, from the service or a local collector",
        "Sum the service's daily usage rollups (GET /usage/rollups/) by day, service "
        "and/or customer. The API key comes from AICM_API_KEY.",
        run=run_costs,
    )
    costs.add_argument(
        "--by",
        default="day",
        metavar="DIMS",
        help="group by these, comma-separated: day, service, customer (default: %(default)s)",
    )
    _add_common(costs)
    usage = add_command(
        commands,
        "usage",
        "the usage events the service (or a local collector) received",
        "List the service's usage events (GET /usage/events/), newest pages followed "
        "up to --limit. The API key comes from AICM_API_KEY.",
        run=run_usage,
    )
    add_number(usage, "--limit", int, 50, "N", "print at most N events")
    _add_common(usage)


def run_costs(args: argparse.Namespace) -> int:
    """Print the cost table (or JSON)."""
    by = parse_by(args.by)
    with _client(args) as client:
        summary = summarise_rollups(client.iter_usage_rollups(**_filters(args)), by)
    if args.json:
        print_json(summary)
        return EXIT_OK
    rows = [
        [*(r[d] for d in by), format_number(r["quantity"]), f"{r['cost_usd']:.6f}"]
        for r in summary["rows"]
    ]
    footer = ["total", *([""] * (len(by) - 1)), "", f"{summary['cost_usd']:.6f}"]
    right = [False] * len(by) + [True, True]
    show(table([*by, "quantity", "cost (USD)"], rows, right=right, footer=footer))
    if summary["unpriced_events"]:
        print(
            f"{summary['unpriced_events']} event(s) have no price and are not in the costs"
            " (the service knows no price for their service)"
        )
    return EXIT_OK


def _event_json(event: UsageEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "timestamp": event.timestamp.isoformat().replace("+00:00", "Z"),
        "service": event.service_id,
        "customer": event.customer_key,
        "response_id": event.response_id,
        "usage": event.usage,
    }


def _usage_text(usage: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in usage.items()) or "-"


def run_usage(args: argparse.Namespace) -> int:
    """Print the usage events (or JSON)."""
    events: list[UsageEvent] = []
    with _client(args) as client:
        for event in client.iter_usage_events(**_filters(args), limit=min(args.limit, 1000)):
            events.append(event)
            if len(events) >= args.limit:
                break
    if args.json:
        print_json([_event_json(e) for e in events])
        return EXIT_OK
    rows = [
        [
            e.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
            e.service_id or "-",
            e.customer_key or NO_CUSTOMER,
            e.response_id,
            _usage_text(e.usage),
        ]
        for e in events
    ]
    headers = ["time (UTC)", "service", "customer", "response_id", "usage"]
    show(table(headers, rows))
    return EXIT_OK
