"""Records dropped for good are visible on stderr when the application configured no logging.

Each case runs in a fresh interpreter with no logging set up, as a script would, and reads
its stderr: one line with the count per reason, never one line per record.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

from delivery_helpers import stored_ids

from aicm.collector import Faults, LocalCollector

_LINE = re.compile(r"^aicm: (\d+) usage record\(s\) not delivered: (.*)$")


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _run(code: str, base: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    environ.update(AICM_API_KEY="test-key", AICM_API_BASE=base, **env)
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def _counts(stderr: str) -> list[tuple[int, str]]:
    """(count, why) of each loss line; every stderr line must be one."""
    lines = [line for line in stderr.splitlines() if line]
    found = [_LINE.match(line) for line in lines]
    assert all(found), lines
    return [(int(m.group(1)), m.group(2)) for m in found if m]


def test_records_lost_at_close_are_one_line() -> None:
    """A memory queue closed with 30 undelivered records prints one line saying 30."""
    done = _run(
        "from aicm import Tracker\n"
        "t = Tracker(delivery_type='mem_queue', batch_interval=0.01)\n"
        "for n in range(30): t.track('openai', 'openai::gpt-4o', {'input_tokens': n})\n"
        "assert t.close(0.3) == 30\n",
        _closed_port(),
    )
    assert _counts(done.stderr) == [
        (30, "not delivered before the memory queue closed (close deadline)")
    ]


def test_full_queue_drops_are_counted_not_listed() -> None:
    """45 records dropped by on_full=backpressure and 5 lost at close: a few lines, all counted."""
    done = _run(
        "from aicm import Tracker\n"
        "t = Tracker(delivery_type='mem_queue', queue_size=5, delivery_on_full='backpressure',"
        " batch_interval=60)\n"
        "for n in range(50): t.track('openai', 'openai::gpt-4o', {'input_tokens': n})\n"
        "assert t.close(0.2) == 5\n",
        _closed_port(),
    )
    counts = _counts(done.stderr)
    assert len(counts) <= 3
    full = "dropped oldest first: the memory queue was full (on_full=backpressure)"
    assert sum(n for n, why in counts if why == full) == 45
    assert sum(n for n, why in counts if "closed" in why) == 5


def test_dead_letters_are_one_line(collector: LocalCollector) -> None:
    """Ten records the service refuses print one line saying 10, not ten lines."""
    collector.set_faults(Faults(reject_response_ids={f"bad-{n}" for n in range(10)}))
    done = _run(
        "from aicm import Tracker\n"
        "t = Tracker(delivery_type='mem_queue', batch_interval=0.05)\n"
        "for n in range(10):\n"
        "    t.track('openai', 'openai::gpt-4o', {'n': n}, response_id=f'bad-{n}')\n"
        "t.track('openai', 'openai::gpt-4o', {'n': 99}, response_id='good')\n"
        "assert t.close(10) == 0\n",
        collector.api_base,
    )
    assert _counts(done.stderr) == [
        (10, "the service refused them (kept in memory: tracker.dead_letters())")
    ]
    assert stored_ids(collector) == ["good"]


def test_nothing_is_printed_when_nothing_is_lost(collector: LocalCollector) -> None:
    """A run that delivers everything prints nothing on stderr."""
    done = _run(
        "from aicm import Tracker\n"
        "with Tracker(delivery_type='mem_queue') as t:\n"
        "    t.track('openai', 'openai::gpt-4o', {'input_tokens': 1})\n",
        collector.api_base,
    )
    assert done.stderr == ""


def test_loss_goes_to_the_log_when_the_application_logs() -> None:
    """With logging configured, the count goes to the ``aicm.delivery`` logger instead."""
    done = _run(
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout, format='%(name)s %(levelname)s %(message)s')\n"
        "from aicm import Tracker\n"
        "t = Tracker(delivery_type='mem_queue', batch_interval=0.01)\n"
        "for n in range(7): t.track('openai', 'openai::gpt-4o', {'input_tokens': n})\n"
        "t.close(0.2)\n",
        _closed_port(),
    )
    assert "aicm.delivery ERROR aicm: 7 usage record(s) not delivered" in done.stdout
    assert "not delivered" not in done.stderr


def test_aicm_log_level_alone_shows_logs_on_stderr(collector: LocalCollector) -> None:
    """AICM_LOG_LEVEL=INFO with no logging configured prints aicm's INFO lines on stderr."""
    done = _run(
        "from aicm import Tracker\n"
        "with Tracker(delivery_type='mem_queue') as t:\n"
        "    t.track('openai', 'openai::gpt-4o', {'input_tokens': 1})\n",
        collector.api_base,
        AICM_LOG_LEVEL="INFO",
    )
    assert re.search(r"INFO aicm\.delivery: delivered 1 record\(s\)", done.stderr), done.stderr
    assert "test-key" not in done.stderr


def test_the_log_file_is_created_private(collector: LocalCollector, tmp_path: Path) -> None:
    """A log file aicm creates is readable and writable by its owner only (0600)."""
    log = tmp_path / "aicm.log"
    _run(
        "from aicm import Tracker\n"
        f"with Tracker(delivery_type='mem_queue', log_file={str(log)!r}, log_level='DEBUG') as t:\n"
        "    t.track('openai', 'openai::gpt-4o', {'input_tokens': 1})\n",
        collector.api_base,
    )
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "delivered 1 record(s)" in log.read_text()


_CALC_HANDLING = {
    "tracked_methods": ["add"],
    "request_fields": ["a", "b"],
    "response_fields": [{"key": "value", "path": ""}],
    "payload_mapping": {
        "config_id": "config_identifier",
        "timestamp": "timestamp",
        "usage": "response_data.value",
    },
}


def test_records_a_wrapped_client_could_not_queue_are_counted_on_stderr(
    collector: LocalCollector,
) -> None:
    """A CostManager whose full queue (on_full=raise) drops 2 records says so on stderr,
    the count in all, while the wrapped calls themselves go on."""
    collector.set_configs(
        [{"config_id": "calc", "api_id": "calculator", "handling_config": _CALC_HANDLING}]
    )
    done = _run(
        "from aicm import CostManager\n"
        "class Calculator:\n"
        "    def add(self, a, b):\n"
        "        return a + b\n"
        "m = CostManager(Calculator(), queue_size=1, delivery_on_full='raise',"
        " batch_interval=60)\n"
        "assert [m.client.add(n, 1) for n in range(3)] == [1, 2, 3]\n"
        "m.close(5)\n",
        collector.api_base,
    )
    counts = _counts(done.stderr)
    assert sum(n for n, why in counts if why == "could not be queued (the log says why)") == 2
    assert len(counts) <= 2


def test_a_wrapped_clients_failed_immediate_send_is_counted_on_stderr() -> None:
    """A CostManager on IMMEDIATE delivery that cannot reach the service loses the records
    of 3 calls: the calls return, health counts 3 discards, and stderr says 3 in one line."""
    config = {"config_id": "calc", "api_id": "calculator", "handling_config": _CALC_HANDLING}
    done = _run(
        "from aicm import CostManager\n"
        "class Calculator:\n"
        "    def add(self, a, b):\n"
        "        return a + b\n"
        f"m = CostManager(Calculator(), delivery_type='immediate', configs=[{config!r}])\n"
        "assert [m.client.add(n, 1) for n in range(3)] == [1, 2, 3]\n"
        "print(dict(m.health().discarded))\n"
        "m.close(5)\n",
        _closed_port(),
        AICM_MAX_ATTEMPTS="1",
    )
    assert done.stdout.strip() == "{'immediate_failed': 3}"
    counts = _counts(done.stderr)
    assert sum(n for n, why in counts if why.startswith("sending them at once")) == 3
    assert len(counts) <= 2


def test_records_the_service_refuses_on_immediate_are_counted_on_stderr(
    collector: LocalCollector,
) -> None:
    """On IMMEDIATE delivery the service refuses 2 of a CostManager's 3 records in a 2xx
    answer: nobody reads that answer, so the 2 are counted and said on stderr."""
    collector.set_faults(Faults(reject_response_ids={"bad-0", "bad-1"}))
    handling = {
        **_CALC_HANDLING,
        "response_fields": [{"key": "value", "path": "value"}],
        "payload_mapping": {
            "config_id": "config_identifier",
            "timestamp": "timestamp",
            "response_id": "response_id",
            "usage": "response_data.value",
        },
    }
    collector.set_configs(
        [{"config_id": "calc", "api_id": "calculator", "handling_config": handling}]
    )
    done = _run(
        "from aicm import CostManager\n"
        "class Calculator:\n"
        "    def add(self, a, b):\n"
        "        return {'id': f'bad-{a}' if a < 2 else 'good', 'value': a + b}\n"
        "m = CostManager(Calculator(), delivery_type='immediate')\n"
        "assert [m.client.add(n, 1)['value'] for n in range(3)] == [1, 2, 3]\n"
        "print(dict(m.health().discarded))\n"
        "m.close(5)\n",
        collector.api_base,
    )
    assert done.stdout.strip() == "{'immediate_refused': 2}"
    counts = _counts(done.stderr)
    why = "the service refused them (immediate delivery; the log says why)"
    assert sum(n for n, said in counts if said == why) == 2
    assert len(counts) <= 2
    assert stored_ids(collector, "track_usage") == ["good"]
