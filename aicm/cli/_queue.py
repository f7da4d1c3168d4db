"""``aicm queue``: inspect and repair a persistent queue file (layer 6).

``stats``, ``list``, ``retry``, ``purge``, ``drain`` and ``watch`` work on the file a
``PERSISTENT_QUEUE`` tracker writes (``--db``, default: the SDK's ``db_path``), and are
safe while trackers use it: reads are read-only, writes are short transactions that leave
rows under a live lease alone, and ``drain`` delivers through the SDK's own engine, with
its leases. A missing or unusable file is reported in one line and left untouched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._core.exceptions import ConfigError, QueueStoreError
from .._core.settings import resolve_settings
from .._io.sqlite import (
    QueueEntry,
    QueueSummary,
    check_queue_file,
    count_pending,
    list_queue,
    purge_rows,
    retry_dead,
    summarize_queue,
)
from ._console import (
    EXIT_FAILURE,
    EXIT_OK,
    CommandError,
    Style,
    UsageError,
    common_parent,
    format_age,
    format_bytes,
    render_table,
    stdout_style,
)

__all__ = ["register"]

Runner = Callable[[argparse.Namespace], int]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _row_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a row id is a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a row id is at least 1, got {value}")
    return value


def register(commands: Any) -> None:
    """Add ``queue`` and its subcommands to the command's subparsers."""
    queue: argparse.ArgumentParser = commands.add_parser(
        "queue",
        parents=[common_parent()],
        help="inspect and repair a persistent queue file",
        description=(
            "Inspect and repair the SQLite file a persistent_queue tracker writes (--db, "
            "default: the SDK's db_path). Safe while trackers use the file: reads are "
            "read-only, writes never touch a record being sent, and drain delivers through "
            "the SDK's own engine. A missing or unusable file is left untouched."
        ),
    )
    queue.set_defaults(run=lambda args: _no_subcommand(queue), command_name="queue")
    sub = queue.add_subparsers(dest="queue_command", metavar="SUBCOMMAND")

    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help="the queue file (default: db_path from AICM_DB_PATH / the INI file, "
        "else ~/.cache/aicm/queue.db)",
    )
    parents = [common_parent(), db]

    def add(name: str, run: Runner, help: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, parents=parents, help=help, description=description
        )
        parser.set_defaults(run=run, command_name=f"queue {name}")
        return parser

    stats = add(
        "stats",
        _stats,
        "counts by state, leased rows, oldest age, size on disk",
        "Show how many records wait (pending), how many are being sent right now (under a "
        "live lease), how many were refused for good (dead), the oldest one's age and the "
        "file's size.",
    )
    stats.add_argument("--json", action="store_true", help="print JSON")

    lister = add(
        "list",
        _list,
        "list queued records",
        "List records in the queue file, oldest first.",
    )
    lister.add_argument("--state", choices=["pending", "dead"], default=None, help="only these")
    lister.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="at most N (default 50)"
    )
    lister.add_argument("--json", action="store_true", help="print JSON, with each record's body")

    retry = add(
        "retry",
        _retry,
        "make dead-lettered records pending again",
        "Make dead-lettered records pending again, due now: the next tracker on the file "
        "(or 'aicm queue drain') sends them.",
    )
    retry.add_argument("ids", nargs="*", type=_row_id, metavar="ID", help="row ids (see list)")
    retry.add_argument("--all", action="store_true", help="every dead-lettered record")

    purge = add(
        "purge",
        _purge,
        "delete records for good",
        "Delete records from the queue file. Records being sent right now (under a live "
        "lease) are kept. Asks first on a terminal; elsewhere needs --yes.",
    )
    purge.add_argument(
        "--state",
        choices=["dead", "pending", "all"],
        default="dead",
        help="which records (default: dead)",
    )
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask")

    drain = add(
        "drain",
        _drain,
        "deliver everything now",
        "Deliver the queued records now through the SDK's delivery engine, then print "
        "what was delivered, what is left and what was dead-lettered. The API key comes "
        "from AICM_API_KEY; records queued for another API root or key are left alone. "
        "Exit status 0 when every record was delivered, 1 otherwise.",
    )
    drain.add_argument(
        "--api-base",
        metavar="URL",
        default=None,
        help="the service (default: AICM_API_BASE / the INI file / https://aicostmanager.com)",
    )
    drain.add_argument(
        "--timeout",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="give up after S seconds (default: %(default)s)",
    )

    watch = add(
        "watch",
        _watch,
        "a live view of the stats",
        "Show the stats, refreshed every --interval seconds, until Ctrl-C (or --count refreshes).",
    )
    watch.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        metavar="S",
        help="seconds between refreshes (default: %(default)s)",
    )
    watch.add_argument(
        "--count", type=_positive_int, default=None, metavar="N", help="stop after N refreshes"
    )


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    raise UsageError("choose a subcommand: stats, list, retry, purge, drain or watch")


def _path(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return Path(args.db).expanduser()
    return resolve_settings().resolved_db_path


def _checked(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except QueueStoreError as exc:
        raise CommandError(str(exc)) from exc


def _age(moment: float | None, now: float) -> float | None:
    return None if moment is None else max(0.0, now - moment)


# -- stats and watch ---------------------------------------------------------------------


def _summary_json(path: Path, s: QueueSummary, now: float) -> dict[str, Any]:
    return {
        "path": str(path),
        "pending": s.pending,
        "leased": s.leased,
        "dead": s.dead,
        "oldest_pending_age": _age(s.oldest_pending_at, now),
        "oldest_dead_age": _age(s.oldest_dead_at, now),
        "size_bytes": s.size_bytes,
        "api_roots": s.api_roots,
    }


def _summary_text(path: Path, s: QueueSummary, now: float, style: Style) -> str:
    pending = f"{s.pending:,}"
    if s.pending:
        pending = style.yellow(pending)
    dead = style.red(f"{s.dead:,}") if s.dead else f"{s.dead:,}"
    lines = [
        f"queue file   {path} ({format_bytes(s.size_bytes)})",
        f"pending      {pending} ({s.leased:,} being sent now, under a lease)",
        f"dead         {dead}",
        f"oldest       {format_age(_age(s.oldest_pending_at, now))} (pending)",
    ]
    for i, (root, n) in enumerate(s.api_roots.items()):
        lines.append(f"{'api roots' if i == 0 else '':<13}{root} ({n:,})")
    return "\n".join(lines)


def _stats(args: argparse.Namespace) -> int:
    path = _path(args)
    summary: QueueSummary = _checked(lambda: summarize_queue(path))
    now = time.time()
    if args.json:
        print(json.dumps(_summary_json(path, summary, now), indent=2))
    else:
        print(_summary_text(path, summary, now, stdout_style()))
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    path = _path(args)
    style = stdout_style()
    previous: QueueSummary | None = None
    shown = 0
    try:
        while True:
            summary: QueueSummary = _checked(lambda: summarize_queue(path))
            now = time.time()
            change = "" if previous is None else f" ({summary.pending - previous.pending:+,})"
            if style.tty:
                stamp = datetime.now().strftime("%H:%M:%S")
                print("\033[H\033[2J", end="")  # redraw in place
                print(style.dim(f"aicm queue watch, every {args.interval:g} s, at {stamp}"))
                print(_summary_text(path, summary, now, style) + change, flush=True)
            else:
                stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
                print(
                    f"{stamp} pending={summary.pending}{change} leased={summary.leased} "
                    f"dead={summary.dead} "
                    f"oldest={format_age(_age(summary.oldest_pending_at, now))} "
                    f"size={summary.size_bytes}",
                    flush=True,
                )
            previous = summary
            shown += 1
            if args.count is not None and shown >= args.count:
                return EXIT_OK
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C is how a watch ends


# -- list --------------------------------------------------------------------------------


def _entry_json(e: QueueEntry, now: float) -> dict[str, Any]:
    try:
        record: Any = json.loads(e.body)
    except ValueError:
        record = e.body
    return {
        "id": e.id,
        "state": e.state,
        "endpoint": e.endpoint,
        "response_id": e.response_id,
        "api_root": e.api_root,
        "attempts": e.attempts,
        "age": _age(e.created_at, now),
        "leased": e.leased,
        "due_in": max(0.0, e.next_attempt_at - now) if e.state == "pending" else None,
        "last_error": e.last_error,
        "dead_at": e.dead_at,
        "record": record,
    }


def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def _list(args: argparse.Namespace) -> int:
    path = _path(args)
    entries: list[QueueEntry] = _checked(
        lambda: list_queue(path, state=args.state, limit=args.limit)
    )
    now = time.time()
    if args.json:
        print(json.dumps([_entry_json(e, now) for e in entries], indent=2))
        return EXIT_OK
    if not entries:
        print(f"no {args.state or 'queued'} records in {path}")
        return EXIT_OK
    style = stdout_style()
    rows = []
    for e in entries:
        if e.state == "dead":
            status = style.red("dead")
        elif e.leased:
            status = "sending"
        elif e.next_attempt_at > now:
            status = f"retry in {format_age(e.next_attempt_at - now)}"
        else:
            status = "due"
        rows.append(
            [
                e.id,
                status,
                e.endpoint,
                e.response_id,
                e.attempts,
                format_age(now - e.created_at),
                _short(e.last_error, 60),
            ]
        )
    headers = ["id", "state", "endpoint", "response_id", "tries", "age", "last error"]
    right = [True, False, False, False, True, True, False]
    print(render_table(headers, rows, right=right, style=style))
    return EXIT_OK


# -- retry and purge ---------------------------------------------------------------------


def _retry(args: argparse.Namespace) -> int:
    if args.all == bool(args.ids):
        raise UsageError("give row ids to retry, or --all (not both)")
    path = _path(args)
    outcome = _checked(lambda: retry_dead(path, None if args.all else args.ids))
    print(f"{outcome.retried:,} dead record(s) made pending, due now, in {path}")
    if outcome.not_dead:
        ids = ", ".join(str(i) for i in outcome.not_dead)
        raise CommandError(f"not dead-lettered rows (missing, pending or delivered): {ids}")
    return EXIT_OK


def _confirm(question: str) -> bool:
    print(question + " [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _purge(args: argparse.Namespace) -> int:
    path = _path(args)
    summary: QueueSummary = _checked(lambda: summarize_queue(path))
    count = {
        "dead": summary.dead,
        "pending": summary.pending - summary.leased,
        "all": summary.dead + summary.pending - summary.leased,
    }[args.state]
    what = {"dead": "dead-lettered", "pending": "pending", "all": "pending and dead-lettered"}
    if count == 0:
        kept = summary.leased if args.state != "dead" else 0
        note = f" (kept {kept:,} being sent now, under a live lease)" if kept else ""
        print(f"no {what[args.state]} records to purge in {path}{note}")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to delete records without confirmation: add --yes")
        if not _confirm(f"Delete {count:,} {what[args.state]} record(s) from {path} for good?"):
            print("nothing deleted", file=sys.stderr)
            return EXIT_FAILURE
    outcome = _checked(lambda: purge_rows(path, state=args.state))
    print(f"deleted {outcome.deleted:,} record(s) from {path}")
    if outcome.kept_leased:
        print(f"kept {outcome.kept_leased:,} record(s) being sent now (under a live lease)")
    return EXIT_OK


# -- drain -------------------------------------------------------------------------------


def _drain(args: argparse.Namespace) -> int:
    from .._sync.tracker import Tracker

    path = _path(args)
    _checked(lambda: check_queue_file(path))
    try:
        settings = resolve_settings(api_base=args.api_base, db_path=str(path))
    except ConfigError as exc:
        if args.api_base is not None and str(exc).startswith("api_base"):
            raise UsageError(f"--api-base: {exc}") from exc
        raise
    if not settings.api_key:
        raise CommandError("drain needs the API key: set AICM_API_KEY")
    root, fp = settings.api_root, settings.key_fingerprint
    ours, _ = _checked(lambda: count_pending(path, api_root=root, key_fp=fp))
    err = Style(sys.stderr)
    started = time.monotonic()
    deadline = started + args.timeout
    tracker = Tracker(
        delivery_type="persistent_queue", db_path=str(path), aicm_api_base=settings.api_base
    )
    left = ours
    paused = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            left = tracker.flush(timeout=max(0.0, min(0.25, remaining)))
            health = tracker.health()
            if err.tty:
                print(
                    f"\rdraining {path.name}: {health.sent:,} delivered, {left:,} left, "
                    f"{health.dead_lettered:,} dead-lettered, "
                    f"{time.monotonic() - started:.1f} s ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
            paused = health.auth_paused
            if left == 0 or paused or time.monotonic() >= deadline:
                break
    finally:
        tracker.close(timeout=1.0)
        if err.tty:
            print(file=sys.stderr)
    health = tracker.health()
    left, _ = _checked(lambda: count_pending(path, api_root=root, key_fp=fp))
    after: QueueSummary = _checked(lambda: summarize_queue(path))
    foreign = max(0, after.pending - left)
    style = stdout_style()
    dead = f"{health.dead_lettered:,} dead-lettered"
    print(
        f"delivered {health.sent:,}, left {left + foreign:,}, "
        f"{style.red(dead) if health.dead_lettered else dead} "
        f"(to {root}, in {time.monotonic() - started:.1f} s)"
    )
    if foreign:
        roots = ", ".join(r for r in after.api_roots if r != root) or root
        print(
            f"{foreign:,} of those left are queued for another API root or key ({roots}): "
            "drain them with that --api-base and AICM_API_KEY"
        )
    if paused:
        raise CommandError(f"the service refused the API key: {health.last_error}")
    if left:
        reason = f"; last error: {health.last_error}" if health.last_error else ""
        raise CommandError(f"{left:,} record(s) not delivered within {args.timeout:g} s{reason}")
    return EXIT_OK if health.dead_lettered == 0 and foreign == 0 else EXIT_FAILURE
