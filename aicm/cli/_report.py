"""``aicm report``: usage and cost by service, customer and day from collector records (layer 6).

The one code path from stored records to a cost table: ``aicm report`` reads a collector's
database file (by default the one ``aicm serve`` keeps), ``aicm demo`` the database of the
collector it ran; both go through `read_collector_db()`, `usage_events()` and
`summarise()`, then one renderer.
The file is opened read-only (it may belong to a running collector); the rows are decoded
by the collector's store module, as the collector itself reads them.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from .._core.models import vendor_service_key
from ._common import EXIT_OK, CommandError, UsageError, add_command, format_number
from ._output import print_json, progress, say, show, table
from ._pricing import PriceTable, default_prices, load_prices, price_usage

__all__ = [
    "DIMENSIONS",
    "UsageEvent",
    "add_format_arguments",
    "parse_by",
    "read_collector_db",
    "print_report",
    "register",
    "render_csv",
    "summarise",
    "usage_events",
]

DIMENSIONS = ("service", "customer", "day")
NO_CUSTOMER = "-"
_COST_DIGITS = 9  # JSON costs in nano-dollars: exact enough, free of float noise

# The collector's own reads (RecordStore.records), column for column.
_TRACK_SQL = (
    "SELECT api_id, service_key, response_id, timestamp, payload, client_customer_key, context,"
    " received_at, user_agent FROM track ORDER BY seq"
)
_USAGE_SQL = (
    "SELECT response_id, config_id, service_id, timestamp, usage, client_customer_key, context,"
    " base_url, extra, received_at, user_agent FROM track_usage ORDER BY seq"
)


@attrs.frozen(kw_only=True)
class UsageEvent:
    """One stored usage record, reduced to what a cost report groups and prices."""

    service: str
    customer: str
    day: str
    usage: Any


def read_collector_db(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``track`` and ``track_usage`` records in a collector's database, read-only.

    A missing file, or one that is not a collector database, raises ``CommandError`` and
    is left as it was.
    """
    try:
        from aicm.collector import _store
    except ImportError as exc:
        raise CommandError(str(exc)) from exc
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"no collector database at {file}")
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise CommandError(f"cannot open the collector database {file}: {exc}") from exc
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"track", "track_usage"} <= tables:
            raise CommandError(f"{file} is not a collector database (no track tables)")
        (total,) = conn.execute(
            "SELECT (SELECT count(*) FROM track) + (SELECT count(*) FROM track_usage)"
        ).fetchone()
        with progress(f"reading {file.name}", total) as bar:
            track = [_store._track_dict(row) for row in bar.track(conn.execute(_TRACK_SQL))]
            usage = [_store._usage_dict(row) for row in bar.track(conn.execute(_USAGE_SQL))]
    except sqlite3.DatabaseError as exc:
        raise CommandError(f"{file} is not a usable collector database: {exc}") from exc
    except ValueError as exc:  # a JSON column that does not decode
        raise CommandError(f"{file} holds a record that cannot be read: {exc}") from exc
    finally:
        conn.close()
    return track, usage


def _day(timestamp: Any, received_at: Any) -> str:
    if isinstance(timestamp, str):
        try:
            moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            try:  # the current /track record may carry epoch seconds
                moment = datetime.fromtimestamp(float(timestamp), tz=timezone.utc)
            except (ValueError, OverflowError, OSError):
                moment = None
        if moment is not None:
            if moment.tzinfo is not None:
                moment = moment.astimezone(timezone.utc)
            return moment.date().isoformat()
    if isinstance(received_at, (int, float)):
        return datetime.fromtimestamp(received_at, tz=timezone.utc).date().isoformat()
    return "?"


def _track_service(record: Mapping[str, Any]) -> str:
    service = str(record["service_key"])
    api_id = record.get("api_id")
    return vendor_service_key(api_id, service) if isinstance(api_id, str) else service


def usage_events(
    track: Iterable[Mapping[str, Any]], track_usage: Iterable[Mapping[str, Any]]
) -> list[UsageEvent]:
    """The stored records of both endpoints as usage events.

    A ``/track`` record's service is its ``"vendor::model"`` service key (the older record's
    ``api_id`` and bare ``service_key`` are named so too, so both forms of one service
    group together) and its usage the ``payload``; a
    ``/track-usage`` record's service is its ``service_id``, else its ``config_id``.
    """
    events = [
        UsageEvent(
            service=_track_service(r),
            customer=str(r.get("client_customer_key") or r.get("customer_key") or NO_CUSTOMER),
            day=_day(r.get("timestamp"), r.get("received_at")),
            usage=r.get("payload"),
        )
        for r in track
    ]
    events += [
        UsageEvent(
            service=str(r.get("service_id") or r.get("config_id") or "?"),
            customer=str(r.get("client_customer_key") or NO_CUSTOMER),
            day=_day(r.get("timestamp"), r.get("received_at")),
            usage=r.get("usage"),
        )
        for r in track_usage
    ]
    return events


def parse_by(text: str) -> tuple[str, ...]:
    """``"service,customer"`` -> ``("service", "customer")``; ``UsageError`` for anything else."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in DIMENSIONS]
    if not names or unknown:
        raise UsageError(
            f"--by takes a comma-separated list of {', '.join(DIMENSIONS)}; got {text!r}"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"--by names a dimension twice: {text!r}")
    return names


class _Group:
    __slots__ = ("costs", "records", "unpriced", "usage")

    def __init__(self) -> None:
        self.records = 0
        self.unpriced = 0
        self.usage: dict[str, float] = defaultdict(float)
        self.costs: list[float] = []

    def add(self, amounts: Mapping[str, float], cost: float, priced: bool = True) -> None:
        self.records += 1
        for metric, amount in amounts.items():
            self.usage[metric] += amount
        if priced:
            self.costs.append(cost)
        else:
            self.unpriced += 1

    def row(self, keys: Mapping[str, str]) -> dict[str, Any]:
        return {
            **keys,
            "records": self.records,
            "usage": {m: _plain(a) for m, a in sorted(self.usage.items())},
            "cost_usd": round(math.fsum(self.costs), _COST_DIGITS),
            "unpriced_records": self.unpriced,
        }


def _plain(amount: float) -> float | int:
    return int(amount) if amount.is_integer() and abs(amount) < 2**53 else amount


def summarise(
    events: Iterable[UsageEvent], prices: PriceTable, *, by: Sequence[str] = DIMENSIONS
) -> dict[str, Any]:
    """Usage and cost of ``events`` grouped ``by`` the given dimensions (JSON-ready).

    Each record is priced by `price_usage()`: the table's rates for
    a service it lists, else genai-prices for a model it knows. Returns ``{"by",
    "records", "cost_usd", "rows", "by_service", "by_customer", "unpriced",
    "unpriced_records", "unpriced_by_service"}``: ``rows`` grouped as asked, sorted; totals
    per service and per customer; the services with records that have no price, and how
    many. An unpriced record adds nothing to ``cost_usd``: each row counts its
    ``unpriced_records`` beside the cost of the rest.
    """
    groups: dict[tuple[str, ...], _Group] = defaultdict(_Group)
    services: dict[str, _Group] = defaultdict(_Group)
    customers: dict[str, _Group] = defaultdict(_Group)
    costs: list[float] = []
    unpriced: dict[str, int] = defaultdict(int)
    count = 0
    for event in events:
        price = price_usage(prices, event.service, event.usage)
        if not price.priced:
            unpriced[event.service] += 1
        values = {"service": event.service, "customer": event.customer, "day": event.day}
        for group in (
            groups[tuple(values[d] for d in by)],
            services[event.service],
            customers[event.customer],
        ):
            group.add(price.amounts, price.cost, price.priced)
        if price.priced:
            costs.append(price.cost)
        count += 1
    return {
        "by": list(by),
        "records": count,
        "cost_usd": round(math.fsum(costs), _COST_DIGITS),
        "rows": [g.row(dict(zip(by, key, strict=True))) for key, g in sorted(groups.items())],
        "by_service": [g.row({"service": s}) for s, g in sorted(services.items())],
        "by_customer": [g.row({"customer": c}) for c, g in sorted(customers.items())],
        "unpriced": sorted(unpriced),
        "unpriced_records": sum(unpriced.values()),
        "unpriced_by_service": dict(sorted(unpriced.items())),
    }


def _usage_text(usage: Mapping[str, float]) -> str:
    return " ".join(f"{m}={format_number(a)}" for m, a in usage.items()) or "-"


def _cost_text(row: Mapping[str, Any]) -> str:
    """``1.234500``, ``unpriced (3)``, or ``1.234500 + 3 unpriced`` for a mixed row."""
    unpriced = row.get("unpriced_records", 0)
    if not unpriced:
        return f"{row['cost_usd']:.6f}"
    if unpriced == row["records"]:
        return f"unpriced ({unpriced:,})"
    return f"{row['cost_usd']:.6f} + {unpriced:,} unpriced"


def _table(title: str | None, names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Any:
    body = [
        [*(str(r[n]) for n in names), f"{r['records']:,}", _usage_text(r["usage"]), _cost_text(r)]
        for r in rows
    ]
    right = [False] * len(names) + [True, False, True]
    return table([*names, "records", "usage", "cost (USD)"], body, right=right, title=title)


def print_report(summary: Mapping[str, Any]) -> None:
    """Print the summary as tables (as grouped, then totals per service and per customer)
    and the total, with the records that have no price named."""
    by: list[str] = summary["by"]
    parts = [_table(None, by, summary["rows"])]
    if by != ["service"]:
        parts.append(_table("Totals by service", ["service"], summary["by_service"]))
    if by != ["customer"]:
        parts.append(_table("Totals by customer", ["customer"], summary["by_customer"]))
    show(*parts)
    say()
    say((f"{summary['records']:,} records, total ${summary['cost_usd']:.6f}", "bold"))
    if summary["unpriced"]:
        counts = summary.get("unpriced_by_service") or {}
        unpriced = ", ".join(f"{s} ({counts.get(s, '?')})" for s in summary["unpriced"])
        total = summary.get("unpriced_records", len(summary["unpriced"]))
        note = f"{total:,} unpriced record(s), not in the total; no price for: {unpriced}"
        say((note, "yellow"))


def render_csv(summary: Mapping[str, Any]) -> str:
    """The grouped rows as CSV: the dimensions, records, one column per metric, cost_usd."""
    metrics = sorted({m for r in summary["rows"] for m in r["usage"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*summary["by"], "records", *metrics, "cost_usd"])
    for r in summary["rows"]:
        writer.writerow(
            [
                *(r[d] for d in summary["by"]),
                r["records"],
                *(r["usage"].get(m, 0) for m in metrics),
                f"{r['cost_usd']:.{_COST_DIGITS}f}",
            ]
        )
    return out.getvalue()


def add_format_arguments(parser: argparse.ArgumentParser) -> None:
    """``--prices PATH`` and ``--json`` / ``--csv`` (shared by ``report`` and ``demo``)."""
    parser.add_argument(
        "--prices",
        metavar="PATH",
        default=None,
        help=(
            "JSON price table {service: {metric: USD per unit}} for custom models and REST "
            "services, over the shipped one; models it does not list are priced by "
            "genai-prices"
        ),
    )
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON")
    formats.add_argument("--csv", action="store_true", help="print the grouped rows as CSV")


def report_prices(path: str | None) -> dict[str, dict[str, float]]:
    """The shipped table (REST services) with the user's override file ``path`` over it."""
    prices = default_prices()
    if path is not None:
        prices.update(load_prices(path))
    return prices


def register(commands: Any) -> None:
    """Add ``report`` to the command's subparsers."""
    from ._serve import DB_ENV

    parser = add_command(
        commands,
        "report",
        "usage and cost by service, customer and day from a collector database",
        "Read a local collector's database (read-only) and print the usage it stored "
        "and what it costs at the price table's rates.",
        run=run,
        json=None,  # with --csv, from add_format_arguments
    )
    parser.add_argument(
        "--db",
        metavar="COLLECTOR_DB",
        default=None,
        help=f"the collector's SQLite file (default: the one aicm serve keeps: ${DB_ENV}, "
        "else records.sqlite3 in the user data directory)",
    )
    parser.add_argument(
        "--by",
        default="service,customer,day",
        metavar="DIMS",
        help="group rows by these, comma-separated: service, customer, day (default: %(default)s)",
    )
    add_format_arguments(parser)


def emit(args: argparse.Namespace, summary: Mapping[str, Any], data: Any = None) -> None:
    """Print ``summary`` as ``--json`` (``data`` if given), ``--csv`` or tables."""
    if args.json:
        print_json(summary if data is None else data)
    elif args.csv:
        print(render_csv(summary), end="")
    else:
        print_report(summary)


def run(args: argparse.Namespace) -> int:
    """Print the report."""
    from ._serve import default_collector_db

    by = parse_by(args.by)
    prices = report_prices(args.prices)
    path = Path(args.db) if args.db is not None else default_collector_db()
    if args.db is None and not path.is_file():
        raise CommandError(f"no collector database at {path} (aicm serve keeps one there; or --db)")
    track, usage = read_collector_db(path)
    events = usage_events(track, usage)
    with progress("pricing", len(events)) as bar:
        summary = summarise(bar.track(events), prices, by=by)
    emit(args, summary)
    return EXIT_OK
