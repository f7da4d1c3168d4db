"""Real deployment shapes, each ending with an exact count at the collector.

- ``gunicorn``: ``gunicorn --preload`` with 2 forked sync workers serving a WSGI app that
  tracks per request (the tracker is built in the master, before the fork), hit N times
  over loopback, then stopped gracefully (SIGTERM);
- ``prefork``: a Celery-like ``multiprocessing`` pool (fork start method) whose parent
  tracked before forking;
- ``threads``: many threads sharing one sync ``Tracker``;
- ``async_app``: an asyncio or trio app, tasks tracking through an ``AsyncTracker`` and
  through a sync ``Tracker``'s ``track_async`` on the same loop;
- ``exit_script``: a script that tracks and simply ends (the atexit hook delivers), with a
  ``Tracker``, a ``CostManager`` or a ``RestUsageWrapper``;
- ``hookless_fork``: a process that forks children through libc's ``fork()`` (no Python
  fork hooks run, as under uWSGI without ``py-call-osafterfork``), every process tracking
  with ids aicm generates;
- ``deleted_file``: a process whose queue file is deleted while it tracks, then killed -9;
  a later process delivers what the file holds.

Every shape takes a collector (``LocalCollector`` or ``CollectorProcess``) and returns a
:class:`ShapeResult`; a shape is right when ``missing``, ``unexpected`` and
``duplicates`` are all empty or zero and ``stored == expected``.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import attrs
import httpx

from aicm import AsyncTracker, Tracker

from ._processes import API_KEY, ROOT, base_env

__all__ = [
    "CALC_HANDLING",
    "ShapeResult",
    "async_app",
    "deleted_file",
    "exit_script",
    "gunicorn",
    "gunicorn_available",
    "hookless_fork",
    "prefork",
    "threads",
]

API_ID = "openai"
SERVICE_KEY = "openai::gpt-4o-mini"
# Leases a little longer than the slowest request here, so that only a process that died
# mid-request (a pool worker's os._exit) ever has its rows sent again.
FAST = {"AICM_BATCH_INTERVAL": "0.05", "AICM_LEASE_SECONDS": "3", "AICM_BACKOFF_CAP": "0.2"}

#: How a CostManager tracks ``Calculator.add``: one record per call, the sum as usage.
CALC_HANDLING: dict[str, Any] = {
    "tracked_methods": ["add"],
    "request_fields": ["a", "b"],
    "response_fields": [{"key": "value", "path": ""}],
    "payload_mapping": {
        "config_id": "config_identifier",
        "timestamp": "timestamp",
        "usage": "response_data.value",
    },
}

#: How a REST wrapper tracks the collector's own ``GET /_collector/health``.
HEALTH_HANDLING: dict[str, Any] = {
    "tracked_methods": ["GET /_collector/health"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "service_id",
        "timestamp": "timestamp",
    },
    "static_payload_fields": {"usage": {"calls": 1}},
}


class Collector(Protocol):
    """What a shape needs of a collector."""

    @property
    def api_base(self) -> str: ...

    def records(self, kind: str) -> list[dict[str, Any]]: ...

    def stats(self) -> dict[str, Any]: ...

    def set_configs(self, configs: Sequence[Mapping[str, Any]]) -> None: ...


@attrs.define
class ShapeResult:
    """What a shape expected at the collector and what it found."""

    name: str
    expected: int
    stored: int
    duplicates: int
    missing: list[str] = attrs.Factory(list)
    unexpected: list[str] = attrs.Factory(list)
    note: str = ""
    seconds: float = 0.0
    resends_expected: bool = False

    @property
    def ok(self) -> bool:
        """Exactly the expected records stored, each once; and no resend at all, unless
        the shape ends processes mid-request (the server's dedup absorbs those)."""
        return (
            not self.missing
            and not self.unexpected
            and (self.duplicates == 0 or self.resends_expected)
            and self.stored == self.expected
        )


def _duplicates(collector: Collector) -> int:
    records = collector.stats()["records"]
    return int(records["track"]["duplicates"]) + int(records["track_usage"]["duplicates"])


def _compare(
    name: str,
    collector: Collector,
    expected: Iterable[str],
    prefix: str,
    duplicates_before: int,
    started: float,
    note: str = "",
) -> ShapeResult:
    wanted = set(expected)
    stored = [
        r["response_id"]
        for r in collector.records("track")
        if str(r["response_id"]).startswith(prefix)
    ]
    found = set(stored)
    return ShapeResult(
        name=name,
        expected=len(wanted),
        stored=len(stored),
        duplicates=_duplicates(collector) - duplicates_before,
        missing=sorted(wanted - found)[:10],
        unexpected=sorted(found - wanted)[:10],
        note=note,
        seconds=time.monotonic() - started,
    )


def _env(collector: Collector, delivery: str, db: Path | None, **extra: str) -> dict[str, str]:
    env = {
        **FAST,
        "AICM_API_KEY": API_KEY,
        "AICM_API_BASE": collector.api_base,
        "REL_DELIVERY": delivery,
        **extra,
    }
    if db is not None:
        env["REL_DB"] = str(db)
    return base_env(env)


def _prefix(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# -- gunicorn --------------------------------------------------------------------------


def gunicorn_available() -> bool:
    """Whether gunicorn is installed (it is a test-only tool, in the ``dev`` extra)."""
    return importlib.util.find_spec("gunicorn") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _gunicorn_options() -> list[str]:
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

    names = {setting.name for setting in KNOWN_SETTINGS}
    # gunicorn 24+ opens a control socket under ~/.gunicorn unless told not to.
    return ["--no-control-socket"] if "control_socket_disable" in names else []


def gunicorn(collector: Collector, delivery: str, requests: int, workdir: Path) -> ShapeResult:
    """``gunicorn --preload -w 2`` tracking per request; SIGTERM; exact count."""
    started = time.monotonic()
    prefix = _prefix(f"guni-{delivery[:3]}")
    port = _free_port()
    before = _duplicates(collector)
    env = _env(collector, delivery, workdir / f"gunicorn-{prefix}.db")
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "--preload", "--workers", "2"),
            *("--worker-class", "sync", "--bind", f"127.0.0.1:{port}"),
            *("--graceful-timeout", "5", *_gunicorn_options(), "reliability.wsgi_app:app"),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: set[str] = set()
    expected: list[str] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    http.get(f"/{prefix}-warmup").raise_for_status()
                    expected.append(f"{prefix}-warmup")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.05)

            def one(i: int) -> tuple[str, str]:
                rid = f"{prefix}-{i}"
                # A fresh connection per request: the two workers share the listening socket.
                answer = http.get(f"/{rid}", headers={"Connection": "close"})
                answer.raise_for_status()
                return rid, answer.text

            # Four at a time: with sequential requests the kernel may hand every accept to
            # the same sync worker, and the other forked worker would never track at all.
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                for rid, pid in pool.map(one, range(requests)):
                    pids.add(pid)
                    expected.append(rid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate(timeout=10)
    note = f"{len(pids)} worker(s) answered; gunicorn exit {server.returncode}"
    if server.returncode != 0:
        note += f": {err[-500:]}"
    return _compare(f"gunicorn {delivery}", collector, expected, prefix, before, started, note)


# -- a Celery-like prefork pool ---------------------------------------------------------


def prefork(
    collector: Collector,
    delivery: str,
    parent_n: int,
    tasks: int,
    per_task: int,
    workdir: Path,
    *,
    finalize: bool = False,
) -> ShapeResult:
    """A fork-started ``multiprocessing`` pool whose parent tracked before forking; with
    ``finalize`` its workers close the tracker as they end (docs/guides/prefork.md)."""
    started = time.monotonic()
    prefix = _prefix(f"fork-{delivery[:3]}")
    before = _duplicates(collector)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "reliability._prefork", delivery, prefix),
            *(str(parent_n), str(tasks), str(per_task)),
            *(["--finalize"] if finalize else []),
        ],
        env=_env(collector, delivery, workdir / f"prefork-{prefix}.db"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    expected = [f"{prefix}-p-{i}" for i in range(parent_n)] + [f"{prefix}-p-after"]
    expected += [f"{prefix}-t{t}-{i}" for t in range(tasks) for i in range(per_task)]
    note = f"exit {done.returncode}: {done.stdout.strip()} {done.stderr[-500:]}".strip()
    name = f"prefork {delivery}" + (" (workers close)" if finalize else "")
    result = _compare(name, collector, expected, prefix, before, started, note)
    # A pool worker ends with os._exit, maybe mid-request: its leased rows are sent again
    # by the parent once their lease expires.
    result.resends_expected = delivery == "persistent_queue"
    return result


# -- many threads ------------------------------------------------------------------------


def threads(
    collector: Collector, delivery: str, n_threads: int, per_thread: int, workdir: Path
) -> ShapeResult:
    """``n_threads`` threads share one sync ``Tracker``; close; exact count."""
    started = time.monotonic()
    prefix = _prefix(f"thr-{delivery[:3]}")
    before = _duplicates(collector)
    errors: list[BaseException] = []
    tracker = Tracker(
        aicm_api_key=API_KEY,
        aicm_api_base=collector.api_base,
        delivery_type=delivery,
        db_path=str(workdir / f"threads-{prefix}.db"),
        batch_interval=0.05,
    )
    gate = threading.Barrier(n_threads)

    def produce(t: int) -> None:
        try:
            gate.wait(10)
            for i in range(per_thread):
                tracker.track(API_ID, SERVICE_KEY, {"n": i}, response_id=f"{prefix}-{t}-{i}")
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    left = tracker.close(30)
    expected = [f"{prefix}-{t}-{i}" for t in range(n_threads) for i in range(per_thread)]
    note = f"left {left}; errors {errors[:3]}"
    return _compare(f"threads {delivery}", collector, expected, prefix, before, started, note)


# -- asyncio and trio apps ----------------------------------------------------------------


def async_app(
    collector: Collector, delivery: str, backend: str, tasks: int, per_task: int, workdir: Path
) -> ShapeResult:
    """An async app on ``backend``: half the tasks track through an ``AsyncTracker``, half
    through a sync ``Tracker``'s ``track_async``, all at once; exact count."""
    started = time.monotonic()
    prefix = _prefix(f"{backend}-{delivery[:3]}")
    before = _duplicates(collector)
    options: dict[str, Any] = {
        "aicm_api_key": API_KEY,
        "aicm_api_base": collector.api_base,
        "delivery_type": delivery,
        "batch_interval": 0.05,
    }
    lefts: list[int] = []

    async def app() -> None:
        sync_tracker = await Tracker.create_async(
            **options, db_path=str(workdir / f"{prefix}-sync.db")
        )
        async with AsyncTracker(**options, db_path=str(workdir / f"{prefix}-async.db")) as tracker:

            async def work(t: int) -> None:
                for i in range(per_task):
                    rid = f"{prefix}-{t}-{i}"
                    if t % 2:
                        await sync_tracker.track_async(
                            API_ID, SERVICE_KEY, {"n": i}, response_id=rid
                        )
                    else:
                        await tracker.track(API_ID, SERVICE_KEY, {"n": i}, response_id=rid)
                    if i % 10 == 0:
                        await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as group:
                for t in range(tasks):
                    group.start_soon(work, t)
            lefts.append(await tracker.aclose(30))
        lefts.append(await sync_tracker.aclose(30))

    anyio.run(app, backend=backend)
    expected = [f"{prefix}-{t}-{i}" for t in range(tasks) for i in range(per_task)]
    name = f"{backend} app {delivery}"
    return _compare(name, collector, expected, prefix, before, started, f"left {lefts}")


# -- a script that just ends ---------------------------------------------------------------


def exit_script(
    collector: Collector, kind: str, delivery: str, n: int, workdir: Path
) -> ShapeResult:
    """A script tracks ``n`` records through ``kind`` and ends without closing anything.

    The queues' batch window is 60 s, so nothing goes unless the exit delivers it.
    """
    started = time.monotonic()
    prefix = _prefix(f"exit-{kind[:4]}-{delivery[:3]}")
    before = _duplicates(collector)
    config_id = f"{prefix}-config"
    if kind == "cost_manager":
        collector.set_configs(
            [{"config_id": config_id, "api_id": "calculator", "handling_config": CALC_HANDLING}]
        )
    elif kind == "rest":
        host = collector.api_base.split("://", 1)[1].rsplit(":", 1)[0]  # REST api_id: hostname
        collector.set_configs(
            [{"config_id": config_id, "api_id": host, "handling_config": HEALTH_HANDLING}]
        )
    done = subprocess.run(
        [sys.executable, "-m", "reliability._exit_script", kind, delivery, prefix, str(n)],
        env=_env(collector, delivery, workdir / f"exit-{prefix}.db", AICM_BATCH_INTERVAL="60"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    note = f"exit {done.returncode}: {done.stdout.strip()} {done.stderr[-500:]}".strip()
    name = f"exit script {kind} {delivery}"
    if kind == "tracker":
        expected = [f"{prefix}-{i}" for i in range(n)]
        return _compare(name, collector, expected, prefix, before, started, note)
    records = [r for r in collector.records("track_usage") if r.get("config_id") == config_id]
    ids = [str(r["response_id"]) for r in records]
    return ShapeResult(
        name=name,
        expected=n,
        stored=len(records),
        duplicates=_duplicates(collector) - before,
        missing=[f"{n - len(ids)} record(s)"] if len(ids) < n else [],
        unexpected=[f"{len(ids) - n} record(s)"] if len(ids) > n else [],
        note=note,
        seconds=time.monotonic() - started,
    )


# -- a fork that skips Python's hooks -----------------------------------------------------


def hookless_fork(
    collector: Collector, delivery: str, children: int, n: int, workdir: Path
) -> ShapeResult:
    """Forks through libc's ``fork()``: every id any process got from ``track`` is stored
    once, and no two processes' generated ids collide."""
    started = time.monotonic()
    run = _prefix(f"hookless-{delivery[:3]}")
    before = _duplicates(collector)
    try:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "reliability._hookless_fork", delivery, run),
                *(str(children), str(n)),
            ],
            env=_env(collector, delivery, workdir / f"{run}.db"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:  # a child stuck (its close never returned)
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        done = subprocess.CompletedProcess(exc.cmd, -1, out, "timed out after 120 s")
    printed = done.stdout.split()
    wanted = set(printed)
    stored = [
        str(r["response_id"])
        for r in collector.records("track")
        if isinstance(r.get("payload"), dict) and r["payload"].get("run") == run
    ]
    found = set(stored)
    collided = len(printed) - len(wanted)  # the same id handed to two records
    return ShapeResult(
        name=f"hookless fork {delivery}",
        expected=(children + 1) * n + children * n,
        stored=len(stored),
        duplicates=_duplicates(collector) - before + collided,
        missing=sorted(wanted - found)[:10],
        unexpected=sorted(found - wanted)[:10],
        note=f"exit {done.returncode}; {len(printed)} ids printed, {collided} collided; "
        f"{done.stderr[-300:]}".strip(),
        seconds=time.monotonic() - started,
    )


# -- a queue file deleted under a running process ------------------------------------------


def deleted_file(collector: Collector, how: str, n: int, workdir: Path) -> ShapeResult:
    """The queue file deleted mid-run (``db`` alone or ``all`` three files), the process
    killed -9 before sending anything: a later process finds and delivers every record."""
    started = time.monotonic()
    prefix = _prefix(f"deleted-{how}")
    before = _duplicates(collector)
    env = _env(collector, "persistent_queue", workdir / f"{prefix}.db")
    produced = subprocess.run(
        [sys.executable, "-m", "reliability._deleted_file", "produce", prefix, str(n), how],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    drained = subprocess.run(
        [sys.executable, "-m", "reliability._deleted_file", "drain"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    note = (
        f"produce exit {produced.returncode}: {produced.stdout.strip()}; drain exit"
        f" {drained.returncode}: {drained.stdout.strip()} {drained.stderr[-300:]}"
    ).strip()
    expected = [f"{prefix}-{i}" for i in range(n)]
    return _compare(f"deleted file ({how})", collector, expected, prefix, before, started, note)
