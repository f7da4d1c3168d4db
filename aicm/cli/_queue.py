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

from rich.console import Group
from rich.text import Text

from .._core.exceptions import QueueStoreError
from .._core.settings import resolve_settings
from .._io.sqlite import (
    QueueEntry,
    QueueSummary,
    check_queue_file,
    count_pending,
    list_queue,
    purge_rows,
    retarget_rows,
    retry_dead,
    summarize_queue,
)
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    CommandError,
    UsageError,
    add_api_base,
    add_command,
    add_group,
    add_number,
    format_age,
    format_bytes,
    number,
    service_settings,
)
from ._output import Cell, live, print_json, print_json_line, progress, say, show, table

__all__ = ["register"]

Runner = Callable[[argparse.Namespace], int]

SUBCOMMANDS = ("stats", "list", "retry", "purge", "drain", "watch", "export", "retarget")


def register(commands: Any) -> None:
    """Add ``queue`` and its subcommands to the command's subparsers."""
    sub = add_group(
        commands,
        "queue",
        "inspect and repair a persistent queue file",
        "Inspect and repair the SQLite file a persistent_queue tracker writes (--db, "
        "default: the SDK's db_path). Safe while trackers use the file: reads are "
        "read-only, writes never touch a record being sent, and drain delivers through "
        "the SDK's own engine. A missing or unusable file is left untouched.",
        SUBCOMMANDS,
    )
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help="the queue file (default: db_path from AICM_DB_PATH / the INI file, "
        "else ~/.cache/aicm/queue.db)",
    )

    def add(name: str, run: Runner, help: str, description: str, **json: str) -> Any:
        return add_command(
            sub,
            name,
            help,
            description,
            run=run,
            parents=[db],
            command_name=f"queue {name}",
            **json,
        )

    add(
        "stats",
        _stats,
        "counts by state, leased rows, oldest age, size on disk",
        "Show how many records wait (pending), how many are being sent right now (under a "
        "live lease), how many were refused for good (dead), the oldest one's age and the "
        "file's size.",
    )
    lister = add(
        "list",
        _list,
        "list queued records",
        "List records in the queue file, oldest first.",
        json="print JSON, with each record's body",
    )
    lister.add_argument("--state", choices=["pending", "dead"], default=None, help="only these")
    add_number(lister, "--limit", int, 50, "N", "at most N")
    retry = add(
        "retry",
        _retry,
        "make dead-lettered records pending again",
        "Make dead-lettered records pending again, due now: the next tracker on the file "
        "(or 'aicm queue drain') sends them.",
    )
    retry.add_argument("ids", nargs="*", type=number(int), metavar="ID", help="row ids (see list)")
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
    add_api_base(drain)
    add_number(drain, "--timeout", float, 60.0, "S", "give up after S seconds")
    watch = add(
        "watch",
        _watch,
        "a live view of the stats",
        "Show the stats, refreshed every --interval seconds, until Ctrl-C (or --count refreshes).",
        json="print one line of JSON per refresh",
    )
    add_number(watch, "--interval", float, 2.0, "S", "seconds between refreshes")
    add_number(watch, "--count", int, None, "N", "stop after N refreshes")
    export = add(
        "export",
        _export,
        "print the queued records as JSON lines",
        "Print the rows of the queue file as JSON lines, oldest first: each row's id, "
        "state, endpoint, response_id, API root, attempts, age, last error and the record "
        "as it will be sent. Read-only.",
        json="the same (export always prints JSON lines)",
    )
    export.add_argument("--state", choices=["pending", "dead"], default=None, help="only these")
    retarget = add(
        "retarget",
        _retarget,
        "send records queued for one service to another",
        "Point the records queued for another API root (--from-api-base, or every other) "
        "at the service --api-base names; with --key-from-env they also carry the "
        "fingerprint of AICM_API_KEY (rows queued with another key, too, are moved). "
        "Pending rows moved are due now; records being sent right now are left alone.",
    )
    add_api_base(retarget)
    retarget.add_argument(
        "--from-api-base", metavar="URL", default=None, help="only rows queued for this service"
    )
    retarget.add_argument(
        "--key-from-env",
        action="store_true",
        help="the rows carry the fingerprint of AICM_API_KEY from now on",
    )


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


def _count(value: int, colour: str) -> Cell:
    return (f"{value:,}", colour) if value else f"{value:,}"


def _summary_rows(path: Path, s: QueueSummary, now: float) -> list[list[Cell]]:
    """The stats as (name, value, note) rows: the same words for stats and watch."""
    rows: list[list[Cell]] = [
        ["queue file", str(path), format_bytes(s.size_bytes)],
        ["pending", _count(s.pending, "yellow"), f"{s.leased:,} being sent now, under a lease"],
        ["dead", _count(s.dead, "red"), ""],
        ["oldest", format_age(_age(s.oldest_pending_at, now)), "pending"],
    ]
    rows += [
        ["api roots" if i == 0 else "", root, f"{n:,}"]
        for i, (root, n) in enumerate(s.api_roots.items())
    ]
    return rows


def _stats(args: argparse.Namespace) -> int:
    path = _path(args)
    summary: QueueSummary = _checked(lambda: summarize_queue(path))
    now = time.time()
    if args.json:
        print_json(_summary_json(path, summary, now))
        return EXIT_OK
    for name, value, note in _summary_rows(path, summary, now):
        say(f"{name:<13}", value, f" ({note})" if note else "")
    return EXIT_OK


def _change(s: QueueSummary, before: QueueSummary | None, name: str) -> int | None:
    return None if before is None else int(getattr(s, name) - getattr(before, name))


def _watch_table(
    path: Path, s: QueueSummary, before: QueueSummary | None, now: float, interval: float
) -> Any:
    def delta(name: str) -> str:
        change = _change(s, before, name)
        return "" if change is None else f"{change:+,}"

    rows: list[list[Cell]] = [
        ["pending", _count(s.pending, "yellow"), delta("pending")],
        ["leased", f"{s.leased:,}", delta("leased")],
        ["dead", _count(s.dead, "red"), delta("dead")],
        ["oldest", format_age(_age(s.oldest_pending_at, now)), ""],
        ["size", format_bytes(s.size_bytes), delta("size_bytes")],
    ]
    stamp = datetime.now().strftime("%H:%M:%S")
    heading = Text(f"aicm queue watch: {path}, every {interval:g} s, at {stamp}", style="dim")
    grid = table(["", "now", "change"], rows, right=[False, True, True])
    return Group(heading, grid)


def _watch_json(path: Path, s: QueueSummary, before: QueueSummary | None, now: float) -> Any:
    data = _summary_json(path, s, now)
    data["at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data["change"] = {
        name: _change(s, before, name) for name in ("pending", "leased", "dead", "size_bytes")
    }
    return data


def _watch_line(s: QueueSummary, before: QueueSummary | None, now: float) -> str:
    def value(name: str) -> str:
        change = _change(s, before, name)
        return f"{name}={getattr(s, name)}" + ("" if change is None else f" ({change:+,})")

    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (
        f"{stamp} {value('pending')} {value('leased')} {value('dead')} "
        f"oldest={format_age(_age(s.oldest_pending_at, now))} size={s.size_bytes}"
    )


def _watch(args: argparse.Namespace) -> int:
    path = _path(args)
    previous: QueueSummary | None = None
    shown = 0
    with live() as display:
        try:
            while True:
                summary: QueueSummary = _checked(lambda: summarize_queue(path))
                now = time.time()
                if args.json:
                    print_json_line(_watch_json(path, summary, previous, now))
                elif display is not None:
                    display.update(
                        _watch_table(path, summary, previous, now, args.interval), refresh=True
                    )
                else:
                    say(_watch_line(summary, previous, now))
                    sys.stdout.flush()
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


def _status(e: QueueEntry, now: float) -> Cell:
    if e.state == "dead":
        return ("dead", "red")
    if e.leased:
        return "sending"
    if e.next_attempt_at > now:
        return f"retry in {format_age(e.next_attempt_at - now)}"
    return "pending"


def _list(args: argparse.Namespace) -> int:
    path = _path(args)
    entries: list[QueueEntry] = _checked(
        lambda: list_queue(path, state=args.state, limit=args.limit)
    )
    now = time.time()
    if args.json:
        print_json([_entry_json(e, now) for e in entries])
        return EXIT_OK
    if not entries:
        say(f"no {args.state or 'queued'} records in {path}")
        return EXIT_OK
    rows = [
        [
            str(e.id),
            _status(e, now),
            e.endpoint,
            e.response_id,
            str(e.attempts),
            format_age(now - e.created_at),
            _short(e.last_error, 60),
        ]
        for e in entries
    ]
    headers = ["id", "state", "endpoint", "response_id", "tries", "age", "last error"]
    show(table(headers, rows, right=[True, False, False, False, True, True, False]))
    return EXIT_OK


# -- retry and purge ---------------------------------------------------------------------


def _retry(args: argparse.Namespace) -> int:
    if args.all == bool(args.ids):
        raise UsageError("give row ids to retry, or --all (not both)")
    path = _path(args)
    outcome = _checked(lambda: retry_dead(path, None if args.all else args.ids))
    if args.json:
        print_json({"path": str(path), "retried": outcome.retried, "not_dead": outcome.not_dead})
    else:
        say(f"{outcome.retried:,} dead record(s) made pending, due now, in {path}")
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
    deleted = kept = 0
    if count == 0:
        kept = summary.leased if args.state != "dead" else 0
        note = f" (kept {kept:,} being sent now, under a live lease)" if kept else ""
        message = f"no {what[args.state]} records to purge in {path}{note}"
    else:
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError("refusing to delete records without confirmation: add --yes")
            question = f"Delete {count:,} {what[args.state]} record(s) from {path} for good?"
            if not _confirm(question):
                print("nothing deleted", file=sys.stderr)
                return EXIT_FAILURE
        outcome = _checked(lambda: purge_rows(path, state=args.state))
        deleted, kept = outcome.deleted, outcome.kept_leased
        message = f"deleted {deleted:,} record(s) from {path}"
        if kept:
            message += f"\nkept {kept:,} record(s) being sent now (under a live lease)"
    if args.json:
        print_json(
            {"path": str(path), "state": args.state, "deleted": deleted, "kept_leased": kept}
        )
    else:
        for line in message.splitlines():
            say(line)
    return EXIT_OK


# -- export and retarget ----------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    path = _path(args)
    entries: list[QueueEntry] = _checked(
        lambda: list_queue(path, state=args.state, limit=sys.maxsize)
    )
    now = time.time()
    for entry in entries:
        print_json_line(_entry_json(entry, now))
    return EXIT_OK


def _retarget(args: argparse.Namespace) -> int:
    path = _path(args)
    _checked(lambda: check_queue_file(path))
    if args.api_base is None:
        raise UsageError("name the service to send the rows to: --api-base URL")
    target = service_settings(args, need_key=args.key_from_env)
    source = None
    if args.from_api_base is not None:
        source = service_settings(
            argparse.Namespace(api_base=args.from_api_base, command_name=args.command_name),
            need_key=False,
        ).api_root
    key_fp = target.key_fingerprint if args.key_from_env else None
    outcome = _checked(
        lambda: retarget_rows(path, api_root=target.api_root, key_fp=key_fp, from_root=source)
    )
    if args.json:
        print_json(
            {
                "path": str(path),
                "api_root": target.api_root,
                "from_api_root": source,
                "key_from_env": bool(args.key_from_env),
                "moved": outcome.moved,
                "kept_leased": outcome.kept_leased,
            }
        )
        return EXIT_OK
    key = " and the key in AICM_API_KEY" if args.key_from_env else ""
    say(f"{outcome.moved:,} record(s) now queued for {target.api_root}{key}, in {path}")
    if outcome.kept_leased:
        say(f"kept {outcome.kept_leased:,} record(s) being sent now (under a live lease)")
    return EXIT_OK


# -- drain -------------------------------------------------------------------------------


def _drain(args: argparse.Namespace) -> int:
    from .._sync.tracker import Tracker

    path = _path(args)
    _checked(lambda: check_queue_file(path))
    settings = service_settings(args, db_path=str(path))
    root, fp = settings.api_root, settings.key_fingerprint
    ours, _ = _checked(lambda: count_pending(path, api_root=root, key_fp=fp))
    started = time.monotonic()
    deadline = started + args.timeout
    tracker = Tracker(
        delivery_type="persistent_queue", db_path=str(path), aicm_api_base=settings.api_base
    )
    paused = False
    try:
        with progress(f"draining {path.name}", ours) as bar:
            while True:
                remaining = deadline - time.monotonic()
                left = tracker.flush(timeout=max(0.0, min(0.25, remaining)))
                health = tracker.health()
                bar.update(completed=health.sent + health.dead_lettered)
                paused = health.auth_paused
                if left == 0 or paused or time.monotonic() >= deadline:
                    break
    finally:
        tracker.close(timeout=1.0)
    health = tracker.health()
    left, _ = _checked(lambda: count_pending(path, api_root=root, key_fp=fp))
    after: QueueSummary = _checked(lambda: summarize_queue(path))
    foreign = max(0, after.pending - left)
    seconds = time.monotonic() - started
    if args.json:
        print_json(
            {
                "path": str(path),
                "api_root": root,
                "delivered": health.sent,
                "left": left + foreign,
                "left_for_other_roots_or_keys": foreign,
                "dead_lettered": health.dead_lettered,
                "seconds": round(seconds, 2),
            }
        )
    else:
        dead = f"{health.dead_lettered:,} dead-lettered"
        say(
            f"delivered {health.sent:,}, left {left + foreign:,}, ",
            (dead, "red") if health.dead_lettered else dead,
            f" (to {root}, in {seconds:.1f} s)",
        )
        if foreign:
            roots = ", ".join(r for r in after.api_roots if r != root) or root
            say(
                f"{foreign:,} of those left are queued for another API root or key ({roots}): "
                "drain them with that --api-base and AICM_API_KEY"
            )
    if paused:
        raise CommandError(f"the service refused the API key: {health.last_error}")
    if left:
        reason = f"; last error: {health.last_error}" if health.last_error else ""
        raise CommandError(f"{left:,} record(s) not delivered within {args.timeout:g} s{reason}")
    return EXIT_OK if health.dead_lettered == 0 and foreign == 0 else EXIT_FAILURE
