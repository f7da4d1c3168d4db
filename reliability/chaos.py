"""Chaos runs: producers track at a steady rate while the collector misbehaves and they die.

One *lane* per delivery type, each with its own collector process so that its figures
are its own. A schedule of fault *phases* is put in force on every lane's collector at
once (5xx, 429 with Retry-After, multi-second stalls, dropped connections with and
without the records stored first, an outage, a refused and then accepted key, a mix);
meanwhile the queued lanes' producers are SIGKILLed at random moments and restarted.

The oracle, per producer run (one process lifetime): every ``response_id`` it printed
(printed only after ``track`` returned) is stored by the collector, once. What may differ:

- a killed run may have committed (persistent) or sent one record it had not printed yet;
- a killed ``mem_queue`` run loses what was still in its memory: the stored part of the
  run must be a prefix of what it tracked, and the lost part the rest (FIFO delivery);
- an ``immediate`` worker stopped while still retrying an id prints ``gaveup``: that id
  may or may not be stored.

Anything else (a printed id missing from a ``persistent_queue`` or a cleanly closed run, a
stored id nobody tracked) is a failure.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._processes import API_KEY, FAST_SETTINGS, CollectorProcess, Producer, base_env

__all__ = [
    "DELIVERY_TYPES",
    "ChaosResult",
    "LaneResult",
    "Phase",
    "check_lane",
    "long_schedule",
    "quick_schedule",
    "run_chaos",
]

DELIVERY_TYPES = ("immediate", "mem_queue", "persistent_queue")
ROTATED_KEY = "rel-rotated-key-not-the-producers"


@attrs.frozen(kw_only=True)
class Phase:
    """Faults in force on every collector for ``seconds``; ``kind`` labels them in reports."""

    kind: str
    faults: dict[str, Any]
    seconds: float
    injects: bool = True


def _phases(scale: float) -> list[Phase]:
    return [
        Phase(kind="5xx", faults={"failure_rate": 0.4, "failure_status": 503}, seconds=scale),
        Phase(
            kind="429 + Retry-After",
            faults={"failure_rate": 0.4, "failure_status": 429, "retry_after": 0.1},
            seconds=scale,
        ),
        Phase(kind="stall", faults={"latency": 2.0}, seconds=max(2.5, 2 * scale)),
        Phase(kind="drop", faults={"drop_rate": 0.3}, seconds=scale),
        Phase(
            kind="drop after store",
            faults={"drop_rate": 0.3, "drop_after_store": True},
            seconds=scale,
        ),
        Phase(
            kind="outage", faults={"failure_rate": 1.0, "failure_status": 503}, seconds=2 * scale
        ),
        Phase(kind="401", faults={"require_api_key": ROTATED_KEY}, seconds=scale),
        Phase(
            kind="401 fixed",
            faults={"require_api_key": API_KEY},
            seconds=scale / 2,
            injects=False,
        ),
        Phase(
            kind="mixed",
            faults={
                "failure_rate": 0.15,
                "failure_status": 502,
                "retry_after": 0.05,
                "drop_rate": 0.15,
                "drop_after_store": True,
                "latency": 0.05,
            },
            seconds=2 * scale,
        ),
        Phase(kind="calm", faults={}, seconds=scale / 2, injects=False),
    ]


def quick_schedule() -> list[Phase]:
    """CI's schedule: every fault once, about 12 s."""
    return _phases(1.0)


def long_schedule() -> list[Phase]:
    """The long form: every fault, longer, three rounds (the second and third shuffled)."""
    rng = random.Random(7)
    rounds = _phases(8.0)
    for _ in range(2):
        middle = _phases(6.0)[:-1]
        rng.shuffle(middle)
        rounds += [*middle, Phase(kind="calm", faults={}, seconds=3.0, injects=False)]
    return rounds


@attrs.define
class ProducerRun:
    """One producer process lifetime and what it printed."""

    prefix: str
    printed: list[str] = attrs.Factory(list)
    gaveup: list[str] = attrs.Factory(list)
    killed: bool = False
    closed_left: int | None = None
    exit_code: int | None = None
    stderr: str = ""


@attrs.define
class LaneResult:
    """One delivery type's figures and the oracle's verdict."""

    delivery: str
    offered: int = 0
    delivered: int = 0
    stored: int = 0
    duplicates_suppressed: int = 0
    lost: int = 0
    lost_in_memory_at_kill: int = 0
    committed_unprinted: int = 0
    gaveup: int = 0
    gaveup_stored: int = 0
    restarts: int = 0
    runs: int = 0
    seconds: float = 0.0
    requests: dict[str, int] = attrs.Factory(dict)
    problems: list[str] = attrs.Factory(list)

    @property
    def records_per_second(self) -> float:
        """Offered records per second of the schedule."""
        return self.offered / self.seconds if self.seconds else 0.0


@attrs.define
class ChaosResult:
    """Every lane's result, and the faults injected by kind (summed over lanes)."""

    lanes: list[LaneResult]
    faults: dict[str, int]
    seconds: float
    phases: list[str]
    injecting: list[str] = attrs.Factory(list)

    @property
    def problems(self) -> list[str]:
        """Every oracle failure of every lane."""
        return [f"{lane.delivery}: {p}" for lane in self.lanes for p in lane.problems]


def _index(rid: str) -> int:
    return int(rid.rsplit("-", 1)[1])


def check_lane(
    delivery: str,
    runs: Sequence[ProducerRun],
    stored_ids: Sequence[str],
    queue_size: int,
    batch_size: int = 1000,
) -> LaneResult:
    """Apply the oracle (see the module docstring) to one lane's runs and stored ids."""
    result = LaneResult(delivery=delivery, runs=len(runs))
    stored = set(stored_ids)
    if len(stored) != len(stored_ids):
        result.problems.append(f"{len(stored_ids) - len(stored)} id(s) stored twice")
    accounted: set[str] = set()
    for run in runs:
        printed = set(run.printed)
        mine = {s for s in stored if s.startswith(run.prefix + "-")}
        missing = printed - mine
        extra = mine - printed
        result.offered += len(printed)
        result.delivered += len(printed & mine)
        result.gaveup += len(run.gaveup)
        accounted |= mine
        if run.killed:
            result.restarts += 1
        if delivery == "immediate":
            unexpected = extra - set(run.gaveup)
            result.gaveup_stored += len(extra & set(run.gaveup))
        else:
            # A killed run may have queued (and sent) the record after its last printed one.
            allowed = {f"{run.prefix}-{len(run.printed)}"} if run.killed else set()
            unexpected = extra - allowed
            result.committed_unprinted += len(extra & allowed)
        if unexpected:
            result.problems.append(
                f"{run.prefix}: {len(unexpected)} stored id(s) never tracked, "
                f"e.g. {sorted(unexpected)[:3]}"
            )
        if not missing:
            continue
        if delivery == "mem_queue" and run.killed:
            # What a SIGKILL loses is what was still in memory: the queue's tail, and the
            # two requests in flight. The newer of those may have been stored while the
            # older was lost, so at most one batch may be stored after the first loss.
            first_lost = min(_index(m) for m in missing)
            if sum(1 for s in mine if _index(s) > first_lost) > batch_size:
                result.problems.append(
                    f"{run.prefix}: lost ids are not the tail still in memory at the kill"
                )
            if len(missing) > queue_size + 2 * batch_size:
                result.problems.append(f"{run.prefix}: lost {len(missing)} > what memory holds")
            result.lost_in_memory_at_kill += len(missing)
            continue
        result.lost += len(missing)
        result.problems.append(
            f"{run.prefix}: {len(missing)} tracked id(s) never stored, e.g. {sorted(missing)[:3]}"
        )
    strays = stored - accounted
    if strays:
        result.problems.append(f"{len(strays)} stored id(s) of no run, e.g. {sorted(strays)[:3]}")
    result.stored = len(stored)
    return result


class _Lane:
    """A delivery type's collector and its succession of producers, driven from a thread."""

    def __init__(
        self,
        delivery: str,
        workdir: Path,
        *,
        rate: float,
        seed: int,
        kill_between: tuple[float, float] | None,
    ) -> None:
        self.delivery = delivery
        self.rate = rate
        self.kill_between = kill_between
        self.rng = random.Random(seed)
        self.db_path = workdir / f"{delivery}-queue.db"
        self.collector = CollectorProcess(workdir / f"{delivery}-collector.db", seed=seed)
        self.env = base_env(
            {**FAST_SETTINGS, "AICM_API_KEY": API_KEY, "AICM_API_BASE": self.collector.api_base}
        )
        self.runs: list[ProducerRun] = []
        self.failures: list[str] = []
        self.done = threading.Event()
        self.first_ready = threading.Event()
        self.thread = threading.Thread(target=self._drive, name=f"lane-{delivery}", daemon=True)

    def kills(self) -> int:
        """How many of this lane's producers were killed so far."""
        return sum(1 for run in self.runs if run.killed)

    def _args(self, prefix: str) -> list[str]:
        return [self.delivery, prefix, "--rate", str(self.rate), "--db", str(self.db_path)]

    def _drive(self) -> None:
        try:
            # A lane ends on a producer that was stopped, not killed: the oracle counts
            # restarts as runs - 1, and a kill racing ``done`` starts one more run, which
            # sees ``done`` set and stops at once.
            while True:
                run = ProducerRun(prefix=f"{self.delivery[:3]}{len(self.runs)}")
                self.runs.append(run)
                producer = Producer(self._args(run.prefix), self.env)
                if not producer.wait_ready():
                    producer.kill()
                    self._collect(run, producer)
                    self.failures.append(f"{run.prefix}: did not start: {producer.stderr[-500:]}")
                    return
                self.first_ready.set()
                if self.kill_between is None:
                    self.done.wait()
                    killed = False
                else:
                    killed = not self.done.wait(self.rng.uniform(*self.kill_between))
                if killed:
                    producer.kill()
                    run.killed = True
                else:
                    code = producer.stop()
                    if code != 0:
                        self.failures.append(f"{run.prefix}: exit {code}: {producer.stderr[-500:]}")
                self._collect(run, producer)
                if not killed:
                    return
        except Exception as exc:  # reported, never left to kill the thread silently
            self.failures.append(f"lane driver failed: {type(exc).__name__}: {exc}")
        finally:
            self.first_ready.set()

    def _collect(self, run: ProducerRun, producer: Producer) -> None:
        run.exit_code = producer.proc.returncode
        run.stderr = producer.stderr
        for line in producer.lines:
            if line.startswith("gaveup "):
                run.gaveup.append(line.split()[1])
            elif line.startswith("closed "):
                run.closed_left = int(line.split()[1])
            elif line.startswith("refused "):
                self.failures.append(f"{run.prefix}: the service refused {line}")
            else:
                run.printed.append(line)
        if run.closed_left and self.delivery != "persistent_queue":
            # A memory queue closed with records left has lost them. A persistent one keeps
            # them in the file (rows a killed run leased wait out the lease): the drain
            # and the oracle check that they arrive.
            self.failures.append(f"{run.prefix}: closed with {run.closed_left} record(s) left")

    def drain(self) -> None:
        """Deliver what killed persistent producers left in the file; check it is empty."""
        if self.delivery != "persistent_queue":
            return
        producer = Producer(
            [self.delivery, "drain", "--db", str(self.db_path), "--drain"], self.env
        )
        code = producer._finish(90.0)
        if code != 0 or producer.lines != ["left 0"]:
            self.failures.append(f"drain: exit {code}, printed {producer.lines}: {producer.stderr}")
        with sqlite3.connect(self.db_path) as conn:
            rows = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        if rows:
            self.failures.append(f"the queue file still holds {rows} row(s) after the drain")


# How long a phase may outlast its seconds while waiting for its first injected fault, and
# how long after the schedule the lanes may take to reach their ``min_restarts``.
PHASE_OVERRUN = 30.0
RESTARTS_WITHIN = 60.0


def _fault_kinds(faults: Mapping[str, Any]) -> set[str]:
    """The collector's fault counters (``stats()["faults"]``) that ``faults`` can raise."""
    kinds: set[str] = set()
    if faults.get("failure_rate"):
        kinds.add("failure")
    if faults.get("latency"):
        kinds.add("latency")
    if faults.get("drop_rate"):
        kinds.add("drop")
    if faults.get("require_api_key") not in (None, API_KEY):
        kinds.add("unauthorized")
    return kinds


def _count(collector: CollectorProcess, kinds: set[str]) -> int:
    """How many faults of ``kinds`` the collector has injected so far."""
    counts = collector.stats()["faults"]
    return sum(int(counts.get(kind, 0)) for kind in kinds)


def run_chaos(
    workdir: Path,
    *,
    schedule: Sequence[Phase],
    rates: dict[str, float],
    kill_between: Mapping[str, tuple[float, float] | None],
    min_restarts: Mapping[str, int] | None = None,
    seed: int = 0,
    log: Callable[[str], None] = lambda _line: None,
) -> ChaosResult:
    """Run ``schedule`` against one lane per delivery type in ``rates``; apply the oracle.

    A lane named in ``min_restarts`` keeps running, without faults, after the schedule until
    its producers have been killed that many times: a loaded machine starts producers
    slowly, and the kills must not depend on how fast it does.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    lanes: list[_Lane] = []
    try:
        for n, delivery in enumerate(rates):
            lanes.append(
                _Lane(
                    delivery,
                    workdir,
                    rate=rates[delivery],
                    seed=seed * 10 + n,
                    kill_between=kill_between.get(delivery),
                )
            )
        faults: dict[str, int] = {}
        for lane in lanes:
            lane.thread.start()
        for lane in lanes:  # the schedule starts once every lane tracks
            lane.first_ready.wait(60)
        started = time.monotonic()
        for phase in schedule:
            for lane in lanes:
                lane.collector.set_faults(phase.faults)
            kinds = _fault_kinds(phase.faults)
            before = [_count(lane.collector, kinds) for lane in lanes]
            log(f"  phase {phase.kind:<18} {phase.seconds:5.1f}s")
            time.sleep(phase.seconds)
            if not phase.injects:
                continue
            # The phase goes on until its faults have met a request: on a loaded machine, or
            # right after a stall whose requests still wait out their latency, none may have
            # arrived within its seconds. The deadline only bounds a producer that hangs.
            deadline = time.monotonic() + PHASE_OVERRUN
            while True:
                now = [_count(lane.collector, kinds) for lane in lanes]
                injected = sum(now) - sum(before)
                if injected > 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            faults[phase.kind] = faults.get(phase.kind, 0) + injected
        for lane in lanes:
            lane.collector.set_faults({})
        deadline = time.monotonic() + RESTARTS_WITHIN
        for lane in lanes:
            wanted = (min_restarts or {}).get(lane.delivery, 0)
            while lane.kills() < wanted and lane.thread.is_alive():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        for lane in lanes:
            lane.done.set()
        seconds = time.monotonic() - started
        for lane in lanes:
            lane.thread.join(180)
            if lane.thread.is_alive():
                lane.failures.append("the lane's last producer did not stop within 180 s")
        # Faults counted after the schedule (requests answered late) belong to no phase.
        for lane in lanes:
            lane.drain()
        results: list[LaneResult] = []
        for lane in lanes:
            stored_ids = [r["response_id"] for r in lane.collector.records("track")]
            result = check_lane(lane.delivery, lane.runs, stored_ids, queue_size=10_000)
            stats = lane.collector.stats()
            result.duplicates_suppressed = int(stats["records"]["track"]["duplicates"])
            result.requests = {str(k): int(v) for k, v in stats["requests"]["track"].items()}
            result.seconds = seconds
            result.problems = lane.failures + result.problems
            results.append(result)
        return ChaosResult(
            lanes=results,
            faults={k: v for k, v in faults.items() if v},
            seconds=seconds,
            phases=[p.kind for p in schedule],
            injecting=sorted({p.kind for p in schedule if p.injects}),
        )
    finally:
        for lane in lanes:
            lane.done.set()
        for lane in lanes:
            lane.thread.join(5)
            lane.collector.stop()
