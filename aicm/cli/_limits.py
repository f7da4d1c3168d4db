"""``aicm limits``: list, set, remove and follow usage limits over the service's API (layer 6).

The commands speak the service's limit endpoints (``/usage-limits/``), so they work
against ``aicm serve`` and against the service alike: the API base comes from
``--api-base``, else ``AICM_API_BASE`` / the INI file; the key only from ``AICM_API_KEY``
(never from the command line, where other users of the machine could read it).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from ._common import EXIT_OK, UsageError, add_api_base, add_command, add_group, service_settings
from ._output import print_json, say, show, table

if TYPE_CHECKING:
    from .._core.service_models import UsageLimit
    from .._sync.client import CostManagerClient

__all__ = ["register"]

Runner = Callable[[argparse.Namespace], int]


def register(commands: Any) -> None:
    """Add ``limits`` and its subcommands to the command's subparsers."""
    sub = add_group(
        commands,
        "limits",
        "list, set and remove usage limits (on aicm serve or the service)",
        "Manage usage limits over the service's API: an amount in dollars per day or "
        "month, for a service and/or a customer, that alerts or stops spending once "
        "reached. The key comes from AICM_API_KEY; the API base from --api-base, "
        "AICM_API_BASE or the INI file.",
        ("list", "progress", "set", "remove"),
    )
    where = argparse.ArgumentParser(add_help=False)
    add_api_base(where)

    def add(name: str, run: Runner, help: str) -> argparse.ArgumentParser:
        return add_command(sub, name, help, run=run, parents=[where], command_name=f"limits {name}")

    add("list", _list, "list the usage limits")
    add("progress", _progress, "show each limit's spend in its current period")
    setter = add("set", _set, "create a usage limit, or change one given with --id")
    setter.add_argument("--id", metavar="ID", default=None, help="change this limit")
    setter.add_argument("--amount", metavar="USD", default=None, help="dollars per period")
    setter.add_argument("--period", choices=["day", "month"], default=None)
    setter.add_argument(
        "--type",
        dest="threshold_type",
        choices=["limit", "alert"],
        default=None,
        help="limit: calls are refused once reached (the default for a new limit); alert: "
        "a warning only",
    )
    setter.add_argument("--service", metavar="KEY", default=None, help='e.g. "openai::gpt-5"')
    setter.add_argument("--customer", metavar="KEY", default=None, help="a customer key")
    setter.add_argument("--api-key-id", metavar="ID", default=None, help="one API key's id")
    setter.add_argument(
        "--expires-at", metavar="TIME", default=None, help="ISO-8601 time the limit ends"
    )
    setter.add_argument("--message", metavar="TEXT", default=None, help="shown when it triggers")
    setter.add_argument(
        "--inactive", action="store_true", help="store it switched off (--id: switch it off)"
    )
    remover = add("remove", _remove, "remove a usage limit")
    remover.add_argument("limit_id", metavar="ID")


def _client(args: argparse.Namespace) -> CostManagerClient:
    """The client of the service (or collector) the command speaks to."""
    from .._sync.client import CostManagerClient

    return CostManagerClient(settings=service_settings(args))


def _plain(limit: UsageLimit) -> dict[str, Any]:
    """A limit as JSON: its fields and the service's others, amounts as numbers."""
    out: dict[str, Any] = {**limit.extra}
    for field in attrs.fields(type(limit)):
        if field.name != "extra":
            out[field.name] = getattr(limit, field.name)
    for name, value in out.items():
        if isinstance(value, Decimal):
            out[name] = int(value) if value == value.to_integral_value() else float(value)
        elif isinstance(value, tuple):
            out[name] = list(value)
    return out


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _table(limits: Sequence[Mapping[str, Any]], *, progress: bool) -> Any:
    headers = ["id", "type", "amount", "period", "service", "customer", "expires"]
    if progress:
        headers += ["spent", "left"]
    rows = []
    for x in limits:
        row = [
            _cell(x.get("uuid")),
            _cell(x.get("threshold_type")),
            f"${float(x.get('amount') or 0):,.2f}",
            _cell(x.get("period")),
            _cell(x.get("service_key", x.get("service"))),
            _cell(x.get("customer_key", x.get("client"))),
            _cell(x.get("expires_at")),
        ]
        if progress:
            row += [
                f"${float(x.get('current_spend') or 0):,.6f}",
                f"${float(x.get('remaining_amount') or 0):,.6f}",
            ]
        if x.get("active") is False:
            row[1] += " (off)"
        rows.append(row)
    right = [False, False, True, False, False, False, False] + ([True, True] if progress else [])
    # A column no limit uses (no customer, no expiry) is left out: room on a narrow terminal.
    keep = [
        i
        for i, name in enumerate(headers)
        if name not in ("customer", "expires") or any(r[i] != "-" for r in rows)
    ]
    return table(
        [headers[i] for i in keep],
        [[r[i] for i in keep] for r in rows],
        right=[right[i] for i in keep],
    )


def _show(args: argparse.Namespace, data: Any, *, progress: bool = False) -> int:
    if args.json:
        print_json(data)
    elif not data:
        say("no usage limits")
    else:
        show(_table(data if isinstance(data, list) else [data], progress=progress))
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        limits = client.list_usage_limits()
    return _show(args, [_plain(x) for x in limits])


def _progress(args: argparse.Namespace) -> int:
    with _client(args) as client:
        progress = client.list_usage_limit_progress()
    return _show(args, [_plain(x) for x in progress], progress=True)


def _set(args: argparse.Namespace) -> int:
    fields = {
        "amount": args.amount,
        "period": args.period,
        "threshold_type": args.threshold_type,
        "service_key": args.service,
        "client": args.customer,
        "api_key_uuid": args.api_key_id,
        "expires_at": args.expires_at,
        "limit_message": args.message,
    }
    body = {k: v for k, v in fields.items() if v is not None}
    if args.inactive:
        body["active"] = False
    if args.id is not None:
        if not body:
            raise UsageError("limits set --id ID: give at least one field to change")
        with _client(args) as client:
            changed = client.update_usage_limit(args.id, **body)
        return _show(args, _plain(changed))
    missing = [f"--{name}" for name in ("amount", "period") if name not in body]
    if missing:
        raise UsageError(f"a new limit needs {' and '.join(missing)}")
    body.setdefault("threshold_type", "limit")
    with _client(args) as client:
        made = client.create_usage_limit(**body)
    return _show(args, _plain(made))


def _remove(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_usage_limit(args.limit_id)
    if args.json:
        print_json({"removed": args.limit_id})
    else:
        say(f"removed usage limit {args.limit_id}")
    return EXIT_OK
