"""What every ``aicm`` subcommand shares besides its output: exit codes, errors, the way a
command and its options are declared, and the formats of numbers, sizes and ages (layer 6).

Nothing here needs ``rich``: the collector prices usage through `aicm.cli._pricing`,
which raises `CommandError`, without the ``cli`` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._core.settings import Settings

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "UsageError",
    "add_api_base",
    "add_command",
    "add_group",
    "add_number",
    "common_parent",
    "format_age",
    "format_bytes",
    "format_number",
    "number",
    "service_settings",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Runner = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""

    exit_code = EXIT_FAILURE


class UsageError(CommandError):
    """The command was called wrongly: printed as one line, exit status 2."""

    exit_code = EXIT_USAGE


def common_parent() -> argparse.ArgumentParser:
    """A parent parser giving every subcommand ``--debug`` (so it works after the name too)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show a traceback when something fails",
    )
    return parent


def add_command(
    commands: Any,
    name: str,
    help: str,
    description: str | None = None,
    *,
    run: Runner | None = None,
    parents: Sequence[argparse.ArgumentParser] = (),
    command_name: str | None = None,
    json: str | None = "print JSON",
) -> argparse.ArgumentParser:
    """Add one command (or subcommand) to ``commands``: ``--debug``, ``--json`` (unless
    ``json`` is None) and the ``run`` it calls. ``command_name`` is how errors name it."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        parents=[common_parent(), *parents],
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
    )
    if json is not None:
        parser.add_argument("--json", action="store_true", help=json)
    defaults: dict[str, Any] = {"command_name": command_name or name}
    if run is not None:
        defaults["run"] = run
    parser.set_defaults(**defaults)
    return parser


def add_group(commands: Any, name: str, help: str, description: str, choices: Sequence[str]) -> Any:
    """Add a command made of subcommands (``queue``, ``limits``); returns the subparsers.

    Called without a subcommand it prints its help and exits 2 naming the ``choices``.
    """
    group = add_command(commands, name, help, description, json=None)

    def no_subcommand(args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        listed = ", ".join(choices[:-1]) + f" or {choices[-1]}"
        raise UsageError(f"choose a subcommand: {listed}")

    group.set_defaults(run=no_subcommand)
    return group.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")


def number(kind: type[int] | type[float], minimum: int = 1) -> Callable[[str], Any]:
    """An argparse type: a whole number (``int``) of at least ``minimum``, or a finite
    positive number (``float``)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if kind is float and not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        if kind is int and value < minimum:
            raise argparse.ArgumentTypeError(f"expected at least {minimum}, got {text!r}")
        return value

    return parse


def add_number(
    parser: argparse.ArgumentParser,
    flag: str,
    kind: type[int] | type[float],
    default: float | None,
    metavar: str,
    help: str,
) -> None:
    """Add an option taking a `number()` (its default, if any, said in its help)."""
    said = "" if default is None else " (default: %(default)s)"
    parser.add_argument(flag, type=number(kind), default=default, metavar=metavar, help=help + said)


def add_api_base(parser: argparse.ArgumentParser) -> None:
    """``--api-base URL``: the service (or ``aicm serve``) a command speaks to."""
    parser.add_argument(
        "--api-base",
        metavar="URL",
        default=None,
        help="the service, or aicm serve's address, e.g. http://127.0.0.1:8765 (default: "
        "AICM_API_BASE / the INI file / https://aicostmanager.com)",
    )


def service_settings(
    args: argparse.Namespace, *, need_key: bool = True, **options: Any
) -> Settings:
    """The SDK's settings for the service ``--api-base`` names (a bad URL is a usage error),
    with the API key (unless not ``need_key``), which only the environment or the INI file
    gives."""
    from .._core.exceptions import ConfigError
    from .._core.settings import resolve_settings

    try:
        settings = resolve_settings(api_base=args.api_base, **options)
    except ConfigError as exc:
        if args.api_base is not None and str(exc).startswith("api_base"):
            raise UsageError(f"--api-base: {exc}") from exc
        raise
    if need_key and not settings.api_key:
        raise CommandError(f"{args.command_name} needs the API key: set AICM_API_KEY")
    return settings


def format_number(value: float) -> str:
    """``1234567`` -> ``1,234,567``; a fraction keeps up to 6 significant decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.2f}"


def format_bytes(size: int) -> str:
    """A size in B, KiB, MiB or GiB."""
    amount = float(size)
    for unit in ("B", "KiB", "MiB"):
        if amount < 1024:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"


def format_age(seconds: float | None) -> str:
    """A duration as ``42s``, ``3m05s``, ``2h10m`` or ``4d03h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
