"""Chaos, quick form: producers track through every delivery type while the collector
injects 5xx, 429, stalls, drops, an outage and a refused key, and the queued producers are
SIGKILLed and restarted; every record ``track`` returned for is stored exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.chaos import ProducerRun, check_lane, quick_schedule, run_chaos

pytestmark = pytest.mark.slow

RATES = {"immediate": 300.0, "mem_queue": 600.0, "persistent_queue": 400.0}
KILLS = {"mem_queue": (1.5, 4.0), "persistent_queue": (0.7, 2.5)}
RESTARTS = {"mem_queue": 1, "persistent_queue": 2}


def test_chaos_quick_form(tmp_path: Path) -> None:
    """Every fault plus kill -9 restarts: nothing promised is lost, nothing stored twice."""
    result = run_chaos(
        tmp_path,
        schedule=quick_schedule(),
        rates=RATES,
        kill_between=KILLS,
        min_restarts=RESTARTS,
    )
    assert result.problems == []
    lanes = {lane.delivery: lane for lane in result.lanes}
    for lane in result.lanes:
        print(
            f"\n{lane.delivery}: offered {lane.offered} ({lane.records_per_second:.0f}/s), "
            f"stored {lane.stored}, lost {lane.lost}, in memory at a kill "
            f"{lane.lost_in_memory_at_kill}, server dedup {lane.duplicates_suppressed}, "
            f"restarts {lane.restarts}"
        )
        assert lane.lost == 0
        assert lane.offered > 0
        assert lane.stored == (lane.delivered + lane.committed_unprinted + lane.gaveup_stored)
        assert lane.offered == lane.delivered + lane.lost_in_memory_at_kill
        assert lane.restarts == lane.runs - 1
    assert lanes["immediate"].restarts == 0
    assert lanes["persistent_queue"].lost_in_memory_at_kill == 0
    assert lanes["persistent_queue"].restarts >= RESTARTS["persistent_queue"]
    assert lanes["mem_queue"].restarts >= RESTARTS["mem_queue"]
    # Every kind of fault met real requests.
    assert sorted(k for k, n in result.faults.items() if n > 0) == result.injecting
    assert len(result.injecting) == 8


def test_the_oracle_catches_a_lost_record() -> None:
    """The oracle is not vacuous: a printed id missing from the store is reported lost."""
    run = ProducerRun(prefix="per0", printed=["per0-0", "per0-1", "per0-2"])
    lane = check_lane("persistent_queue", [run], ["per0-0", "per0-2"], queue_size=10)
    assert (lane.offered, lane.delivered, lane.lost) == (3, 2, 1)
    assert lane.problems == ["per0: 1 tracked id(s) never stored, e.g. ['per0-1']"]


def test_the_oracle_allows_only_the_tail_of_a_killed_memory_queue() -> None:
    """A killed memory queue may lose its tail (reported), never a record from the middle."""
    tail = ProducerRun(prefix="mem0", printed=[f"mem0-{i}" for i in range(5)], killed=True)
    lane = check_lane("mem_queue", [tail], ["mem0-0", "mem0-1"], queue_size=10)
    assert (lane.lost, lane.lost_in_memory_at_kill, lane.problems) == (0, 3, [])
    # Two requests in flight: the newer batch (mem2-3) stored, the older (mem2-1, 2) lost.
    in_flight = ProducerRun(prefix="mem2", printed=[f"mem2-{i}" for i in range(5)], killed=True)
    lane = check_lane("mem_queue", [in_flight], ["mem2-0", "mem2-3"], queue_size=10, batch_size=2)
    assert (lane.lost_in_memory_at_kill, lane.problems) == (3, [])
    middle = ProducerRun(prefix="mem1", printed=[f"mem1-{i}" for i in range(6)], killed=True)
    lane = check_lane(
        "mem_queue", [middle], ["mem1-0", "mem1-3", "mem1-4", "mem1-5"], queue_size=10, batch_size=2
    )
    assert lane.problems == ["mem1: lost ids are not the tail still in memory at the kill"]


def test_the_oracle_allows_one_unprinted_record_per_kill() -> None:
    """A kill may leave one committed, unprinted id; any other untracked stored id is reported."""
    run = ProducerRun(prefix="per0", printed=["per0-0"], killed=True)
    lane = check_lane("persistent_queue", [run], ["per0-0", "per0-1"], queue_size=10)
    assert (lane.committed_unprinted, lane.problems) == (1, [])
    lane = check_lane("persistent_queue", [run], ["per0-0", "per0-1", "per0-7"], queue_size=10)
    assert lane.problems == ["per0: 1 stored id(s) never tracked, e.g. ['per0-7']"]
