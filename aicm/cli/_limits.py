"""``aicm limits``: list, set, remove and follow usage limits over the service's API (layer 6).

The commands speak the service's limit endpoints (``/usage-limits/``), so they work
against ``aicm serve`` and against the service alike: the API base comes from
``--api-base``, else ``AICM_API_BASE`` / the INI file; the key only from ``AICM_API_KEY``
(never from the command line, where other users of the machine could read it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from .._core.settings import resolve_settings
from .._io.service_api import MAX_API_ANSWER_BYTES
from .._version import __version__
from ._console import EXIT_OK, CommandError, UsageError, common_parent, render_table, stdout_style

__all__ = ["register"]

Runner = Callable[[argparse.Namespace], int]


def register(commands: Any) -> None:
    """Add ``limits`` and its subcommands to the command's subparsers."""
    limits: argparse.ArgumentParser = commands.add_parser(
        "limits",
        parents=[common_parent()],
        help="list, set and remove usage limits (on aicm serve or the service)",
        description=(
            "Manage usage limits over the service's API: an amount in dollars per day or "
            "month, for a service and/or a customer, that alerts or stops spending once "
            "reached. The key comes from AICM_API_KEY; the API base from --api-base, "
            "AICM_API_BASE or the INI file."
        ),
    )
    limits.set_defaults(run=lambda args: _no_subcommand(limits), command_name="limits")
    sub = limits.add_subparsers(dest="limits_command", metavar="SUBCOMMAND")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--api-base",
        metavar="URL",
        default=None,
        help="the service or collector, e.g. http://127.0.0.1:8765 (default: AICM_API_BASE)",
    )
    where.add_argument("--json", action="store_true", help="print JSON")
    parents = [common_parent(), where]

    def add(name: str, run: Runner, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, parents=parents, help=help, description=help[0].upper() + help[1:] + "."
        )
        parser.set_defaults(run=run, command_name=f"limits {name}")
        return parser

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


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    raise UsageError("choose a subcommand: list, progress, set or remove")


def _request(
    args: argparse.Namespace, method: str, path: str, body: Mapping[str, Any] | None = None
) -> Any:
    settings = resolve_settings(api_base=args.api_base)
    key = settings.require_api_key()
    url = settings.api_root + path
    headers = {"Authorization": f"Bearer {key}", "User-Agent": f"aicm-sdk/{__version__}"}
    try:
        with (
            httpx.Client(timeout=settings.timeout) as client,
            client.stream(method, url, headers=headers, json=body) as response,
        ):
            content = _read_at_most(response, MAX_API_ANSWER_BYTES)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach {settings.api_root}: {exc}") from exc
    if content is None:
        raise CommandError(
            f"{method} {path}: HTTP {response.status_code}: the answer is larger than"
            f" {MAX_API_ANSWER_BYTES} bytes; it was not read further"
        )
    text = content.decode("utf-8", "replace")
    if response.status_code >= 400:
        try:
            detail = json.loads(text).get("detail", text)
        except (ValueError, AttributeError, RecursionError):
            detail = text
        raise CommandError(f"{method} {path}: HTTP {response.status_code}: {str(detail)[:500]}")
    if response.status_code == 204 or not content:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CommandError(f"{method} {path}: the answer is not JSON") from exc


def _read_at_most(response: httpx.Response, limit: int) -> bytes | None:
    """The answer's decoded body, or None when it is longer than ``limit`` bytes (the rest
    is never read: a broken service cannot grow the command without bound)."""
    parts: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _table(limits: Sequence[Mapping[str, Any]], *, progress: bool) -> str:
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
    return render_table(headers, rows, right=right, style=stdout_style())


def _show(args: argparse.Namespace, data: Any, *, progress: bool = False) -> int:
    if args.json:
        print(json.dumps(data, indent=2))
    elif not data:
        print("no usage limits")
    else:
        print(_table(data if isinstance(data, list) else [data], progress=progress))
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    return _show(args, _request(args, "GET", "/usage-limits/"))


def _progress(args: argparse.Namespace) -> int:
    return _show(args, _request(args, "GET", "/usage-limits/progress/"), progress=True)


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
        return _show(args, _request(args, "PUT", f"/usage-limits/{args.id}/", body))
    missing = [f"--{name}" for name in ("amount", "period") if name not in body]
    if missing:
        raise UsageError(f"a new limit needs {' and '.join(missing)}")
    body.setdefault("threshold_type", "limit")
    return _show(args, _request(args, "POST", "/usage-limits/", body))


def _remove(args: argparse.Namespace) -> int:
    _request(args, "DELETE", f"/usage-limits/{args.limit_id}/")
    if args.json:
        print(json.dumps({"removed": args.limit_id}))
    else:
        print(f"removed usage limit {args.limit_id}")
    return EXIT_OK
