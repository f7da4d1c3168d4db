"""What ``import aicm`` and a first ``track()`` load: the heavy parts stay deferred.

Each check runs in a fresh interpreter (this test process has imported everything already)
and reads ``sys.modules`` afterwards.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import aicm
from aicm.collector import LocalCollector

# Loaded by nothing ``import aicm`` does: the public names that live in these modules are
# imported the first time a program asks for one of them.
NOT_AT_IMPORT = [
    "anyio",
    "attrs",
    "cattrs",
    "httpx",
    "sqlite3",
    "aicm._api.cost_manager",
    "aicm._api.proxy",
    "aicm._api.tracker",
    "aicm._core.models",
    "aicm._core.service_models",
    "aicm._core.settings",
    "aicm._delivery.engine",
    "aicm._io.http",
    "aicm._io.service_api",
    "aicm._providers",
    "aicm._sync.tracker",
    "aicm.cli",
    "aicm.collector",
    "aicm.testing",
]

# Not needed to build a tracker and deliver its first record (queued or immediate): the
# SQLite queue, the providers and the extractor behind ``track_llm_usage`` and the proxies,
# schema checking, the wrappers, the collector and the testing kit.
NOT_FOR_FIRST_TRACK = [
    "aicm._api.cost_manager",
    "aicm._api.proxy",
    "aicm._api.rest",
    "aicm._core.extractor",
    "aicm._core.handling",
    "aicm._core.validator",
    "aicm._delivery.sqlite_store",
    "aicm._io.sqlite",
    "aicm._providers",
    "aicm.cli",
    "aicm.collector",
    "aicm.testing",
]

_FIRST_TRACK = """
import sys
import aicm
tracker = aicm.Tracker(aicm_api_key="k", aicm_api_base=sys.argv[1], delivery_type=sys.argv[2])
result = tracker.track("openai", "gpt-4o-mini", {"input_tokens": 1}, response_id=sys.argv[2])
assert tracker.close(30) == 0
"""


def _loaded_after(code: str, *args: str) -> set[str]:
    """The modules in ``sys.modules`` after ``code`` ran in a fresh interpreter."""
    program = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_import_loads_only_the_exceptions() -> None:
    """``import aicm`` loads the exceptions tree, and none of the heavy modules."""
    loaded = _loaded_after("import aicm")
    assert "aicm._core.exceptions" in loaded
    assert [name for name in NOT_AT_IMPORT if name in loaded] == []


def test_a_public_name_loads_its_module_on_first_use() -> None:
    """``from aicm import X`` and ``aicm.X`` both work; the module comes in then."""
    loaded = _loaded_after("import aicm\nassert aicm.DeliveryType.MEM_QUEUE.value")
    assert "aicm._core.settings" in loaded
    assert "aicm._delivery.engine" not in loaded
    loaded = _loaded_after("from aicm import Customer\nassert Customer.__name__ == 'Customer'")
    assert "aicm._core.service_models" in loaded


def test_every_public_name_resolves_and_dir_lists_it() -> None:
    """Every name in ``__all__`` resolves to the object of the module it comes from, and
    ``dir(aicm)`` lists it before it is first used."""
    listed = _loaded_after("import aicm\nassert set(aicm.__all__) <= set(dir(aicm))")
    assert "aicm._sync.tracker" not in listed  # dir() imported nothing
    for name in aicm.__all__:
        value = getattr(aicm, name)
        module = sys.modules[getattr(value, "__module__", "aicm")]
        if isinstance(value, type) or callable(value):
            assert getattr(module, name, value) is value, name


@pytest.mark.parametrize("delivery", ["immediate", "mem_queue"])
def test_first_track_loads_only_what_it_needs(collector: LocalCollector, delivery: str) -> None:
    """A tracker built and tracking once (delivered) leaves the rest of aicm unloaded."""
    loaded = _loaded_after(_FIRST_TRACK, collector.api_base, delivery)
    assert [r["response_id"] for r in collector.records("track")] == [delivery]
    assert "aicm._delivery.engine" in loaded
    assert [name for name in NOT_FOR_FIRST_TRACK if name in loaded] == []


def test_unknown_name_is_an_attribute_error() -> None:
    """A name aicm does not have raises AttributeError (``hasattr`` is False)."""
    assert not hasattr(aicm, "Trakcer")
    with pytest.raises(ImportError, match="Trakcer"):
        from aicm import Trakcer  # type: ignore[attr-defined]  # noqa: F401


def test_type_checking_imports_match_the_lazy_table() -> None:
    """The imports type checkers read name the same modules the lazy table imports."""
    source = Path(aicm.__file__).read_text(encoding="utf-8")
    checked: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                for alias in statement.names:
                    checked[alias.name] = str(statement.module)
    assert checked == aicm._LAZY
    eager = {name for name in aicm.__all__ if name not in aicm._LAZY}
    assert eager == {name for name in eager if name in vars(aicm)}
