"""One option list: every class and the docs see every setting ``OPTIONS`` declares."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import shutil
import subprocess
import sys
import textwrap
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

import aicm
from aicm import (
    AsyncCostManager,
    AsyncRestUsageWrapper,
    AsyncTracker,
    ConfigError,
    CostManager,
    RestUsageWrapper,
    Tracker,
)
from aicm._api.options import NOT_SETTINGS, DeliveryOptions, TrackerOptions, TrackOptions
from aicm._api.tracker import _TRACK_OPTIONS
from aicm._core.settings import ARGUMENTS, OPTIONS, Settings, resolve_settings
from aicm.collector import LocalCollector
from tests.core.test_settings import SAMPLES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "settings.md"


def load_generator() -> Any:
    """``scripts/options.py``, the generator of everything written from ``OPTIONS``."""
    spec = importlib.util.spec_from_file_location(
        "aicm_options_script", ROOT / "scripts/options.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = load_generator()

# Every public call that takes the options, with the TypedDict its ``**options`` must be.
FACADE_CALLS: list[tuple[Callable[..., Any], type]] = [
    (AsyncTracker.__init__, TrackerOptions),
    (Tracker.__init__, TrackerOptions),
    (Tracker.create_async, TrackerOptions),
    (AsyncCostManager.__init__, DeliveryOptions),
    (CostManager.__init__, DeliveryOptions),
    (AsyncRestUsageWrapper.__init__, DeliveryOptions),
    (RestUsageWrapper.__init__, DeliveryOptions),
]


def option_keys(typed_dict: type) -> set[str]:
    """The keys a TypedDict declares, its bases' included."""
    keys: frozenset[str] = typed_dict.__optional_keys__ | typed_dict.__required_keys__  # type: ignore[attr-defined]
    return set(keys)


def test_settings_fields_are_the_options() -> None:
    """``Settings`` has a field for each option in the list, and no other (but ini_path)."""
    assert {f.name for f in attrs.fields(Settings)} == {o.name for o in OPTIONS} | {"ini_path"}


def test_delivery_options_name_every_argument() -> None:
    """The classes' TypedDict holds exactly the list's arguments and the three non-settings;
    the trackers' adds their anonymisation and the tracker-only arguments."""
    tracker_only = {o.argument for o in OPTIONS if o.tracker_only}
    assert option_keys(DeliveryOptions) == set(ARGUMENTS) - tracker_only | NOT_SETTINGS
    assert (
        option_keys(TrackerOptions) - option_keys(DeliveryOptions)
        == {
            "anonymize_fields",
            "anonymizer",
        }
        | tracker_only
    )


def test_docs_table_is_generated_from_the_list() -> None:
    """docs/settings.md shows the table the list gives (``python scripts/options.py``)."""
    assert generator.docs_table() in DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize("relative", list(generator.REGIONS), ids=str)
def test_generated_regions_are_current(relative: Path) -> None:
    """Each region generated from ``OPTIONS`` (the ``Settings`` fields, the typed options, the
    docs table) is what the generator writes from the list now."""
    text = (ROOT / relative).read_text(encoding="utf-8")
    expected = [make(OPTIONS) for make in generator.REGIONS[relative]]
    assert generator.region_bodies(text) == expected, (
        f"{relative} is stale: run `python scripts/options.py` after changing OPTIONS"
    )


def test_generated_python_is_ruff_formatted() -> None:
    """The generated lines are as ``ruff format`` leaves them (the regions are checked above,
    so a formatting change there would make that test and ``ruff format --check`` disagree)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    for relative in (generator.SETTINGS, generator.TYPED_OPTIONS):
        text = (ROOT / relative).read_text(encoding="utf-8")
        done = subprocess.run(
            [ruff, "format", "--check", "--config", str(ROOT / "pyproject.toml"), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_adding_an_option_is_one_edit(tmp_path: Path) -> None:
    """One new entry in ``OPTIONS`` and one run of the generator: the option is a ``Settings``
    field, a keyword of every class's typed options (or the trackers' alone), is read from the
    environment and shows in the docs table."""
    shutil.copytree(ROOT / "aicm", tmp_path / "aicm", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "options.py", tmp_path / "scripts" / "options.py")
    (tmp_path / "docs").mkdir()
    shutil.copy(DOCS, tmp_path / "docs" / "settings.md")
    settings = tmp_path / "aicm" / "_core" / "settings.py"
    head = "OPTIONS: tuple[Option, ...] = (\n"
    new = '    _count("widget_count", 7),\n    _seconds("grace", 1.5, tracker_only=True),\n'
    text = settings.read_text(encoding="utf-8")
    assert head in text
    settings.write_text(text.replace(head, head + new), encoding="utf-8")

    env = {"PYTHONPATH": str(tmp_path), "AICM_WIDGET_COUNT": "9", "PATH": ""}
    run = [sys.executable, str(tmp_path / "scripts" / "options.py")]
    subprocess.run(run, env=env, check=True, capture_output=True, cwd=tmp_path)
    check = textwrap.dedent(
        """
        import typing

        import attrs
        from aicm import AsyncTracker, CostManager
        from aicm._api.options import DeliveryOptions, TrackerOptions, resolve_options
        from aicm._core.settings import Settings

        fields = {f.name: f for f in attrs.fields(Settings)}
        assert fields["widget_count"].type == "int", fields["widget_count"].type
        assert fields["grace"].type == "float"
        assert typing.get_type_hints(DeliveryOptions)["widget_count"] == int | None
        assert "grace" not in DeliveryOptions.__optional_keys__
        assert {"widget_count", "grace"} <= TrackerOptions.__optional_keys__
        assert resolve_options({}).widget_count == 9
        assert resolve_options({"grace": 2}, tracker=True).grace == 2.0
        try:
            resolve_options({"grace": 2}, owner="CostManager")
        except TypeError as error:
            assert "grace" in str(error)
        else:
            raise AssertionError("a tracker-only option taken by CostManager")
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.stdout.strip() == "ok", done.stderr
    table = (tmp_path / "docs" / "settings.md").read_text(encoding="utf-8")
    assert "| `widget_count` | `AICM_WIDGET_COUNT` | `widget_count` | `7` |" in table
    assert "| `grace` | `AICM_GRACE` | `grace` | `1.5` s |" in table


def test_docs_name_the_settings_that_are_no_argument() -> None:
    """docs/settings.md's "explicit argument" item names exactly the settings the classes do
    not take as arguments."""
    text = DOCS.read_text(encoding="utf-8")
    item = text[text.index("1. **an explicit argument**") : text.index("2. **the environment**")]
    named = {o.name for o in OPTIONS if f"`{o.name}`" in item}
    assert named == {o.name for o in OPTIONS if o.argument is None}


@pytest.mark.parametrize(
    ("call", "typed_dict"), FACADE_CALLS, ids=lambda c: getattr(c, "__qualname__", "")
)
def test_every_facade_takes_the_typed_options(call: Any, typed_dict: type) -> None:
    """Each facade (and each of its overloads) takes ``**options: Unpack[...]`` and spells no
    option out by itself, so the list cannot drift from it."""
    call = getattr(call, "__func__", call)  # a classmethod: its function
    variants = [call, *typing.get_overloads(call)]
    assert len(variants) > 1 or typed_dict is DeliveryOptions
    for variant in variants:
        variant = getattr(variant, "__func__", variant)
        parameters = inspect.signature(variant).parameters.values()
        var_keyword = [p for p in parameters if p.kind is p.VAR_KEYWORD]
        assert [p.annotation for p in var_keyword] == [f"Unpack[{typed_dict.__name__}]"]
        assert not {p.name for p in parameters} & option_keys(typed_dict)


def test_every_public_class_taking_options_is_checked() -> None:
    """A new public class with ``**options`` is added to FACADE_CALLS above."""
    checked = {call.__qualname__.split(".")[0] for call, _ in FACADE_CALLS}
    for name in aicm.__all__:
        cls = getattr(aicm, name)
        if inspect.isclass(cls) and not issubclass(cls, BaseException):
            parameters = inspect.signature(cls.__init__).parameters
            if "options" in parameters:
                assert name in checked


@pytest.fixture
def aicm_logger() -> Iterator[None]:
    """Restores the ``aicm`` logger's level and handlers the log options change."""
    logger = logging.getLogger("aicm")
    level, handlers = logger.level, list(logger.handlers)
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers[:] = handlers
    logger.setLevel(level)


def every_option(collector: LocalCollector, tmp_path: Path) -> dict[str, Any]:
    """A value for every argument option, none of them the default."""
    values = {o.argument: SAMPLES[o.name][0].value for o in OPTIONS if o.argument is not None}
    values.update(
        aicm_api_key="key",
        aicm_api_base=collector.api_base,
        aicm_api_url="/api/v1",
        delivery_type="mem_queue",
        db_path=str(tmp_path / "queue.db"),
        log_file=str(tmp_path / "aicm.log"),
        log_level="WARNING",
    )
    return values


def build(name: str, options: dict[str, Any]) -> Any:
    """Build the facade ``name`` with ``options`` (offline configs, so nothing is fetched)."""
    if name == "Tracker":
        return Tracker(**options)
    if name == "CostManager":
        return CostManager(httpx.Client(), configs=[], **options)
    if name == "RestUsageWrapper":
        return RestUsageWrapper(httpx.Client(), base_url="https://x.example", configs=[], **options)
    if name == "AsyncTracker":
        return AsyncTracker(**options)
    if name == "AsyncCostManager":
        return AsyncCostManager(httpx.AsyncClient(), configs=[], **options)
    assert name == "AsyncRestUsageWrapper"
    return AsyncRestUsageWrapper(
        httpx.AsyncClient(), base_url="https://x.example", configs=[], **options
    )


FACADES = [
    "Tracker",
    "CostManager",
    "RestUsageWrapper",
    "AsyncTracker",
    "AsyncCostManager",
    "AsyncRestUsageWrapper",
]


@pytest.mark.usefixtures("aicm_logger")
@pytest.mark.parametrize("name", FACADES)
def test_every_facade_resolves_every_option(
    name: str, collector: LocalCollector, tmp_path: Path
) -> None:
    """Given every option at once, each facade's settings are what the list resolves them to."""
    options = every_option(collector, tmp_path)
    facade = build(name, options)
    try:
        expected = resolve_settings(**{ARGUMENTS[k]: v for k, v in options.items()})
        resolved = getattr(facade, "_async", facade).settings  # a sync facade: its twin's
        assert attrs.evolve(resolved, ini_path=None) == attrs.evolve(expected, ini_path=None)
    finally:
        if hasattr(facade, "close"):
            facade.close(0.0)


@pytest.mark.parametrize("name", FACADES)
def test_a_misspelled_option_is_a_clear_config_error(name: str, connection: dict[str, str]) -> None:
    """``timout=`` is refused by every facade with a ConfigError (and TypeError) naming it and
    the option meant."""
    with pytest.raises(ConfigError, match=r"'timout': did you mean 'timeout'\?") as info:
        build(name, {"timout": 3, **connection})
    assert isinstance(info.value, TypeError)
    assert name.removeprefix("Async") in str(info.value) or "Recorder" in str(info.value)


@pytest.mark.parametrize(
    "track", [AsyncTracker.track, Tracker.track, Tracker.track_async], ids=lambda f: f.__qualname__
)
def test_every_track_overload_takes_the_track_options(track: Any) -> None:
    """Both call forms of every tracker's ``track`` take ``**options: Unpack[TrackOptions]``,
    the one list ``track`` checks keywords against."""
    overloads = typing.get_overloads(track)
    assert len(overloads) == 2
    for variant in overloads:
        parameters = inspect.signature(variant).parameters.values()
        var_keyword = [p.annotation for p in parameters if p.kind is p.VAR_KEYWORD]
        assert var_keyword == ["Unpack[TrackOptions]"]
    assert set(_TRACK_OPTIONS) | {"anonymize_fields", "anonymizer"} == option_keys(TrackOptions)
