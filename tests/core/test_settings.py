"""Settings resolution: explicit > environment > INI > default, the INI file, the API key."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from aicm._core.exceptions import ConfigError, MissingApiKeyError
from aicm._core.settings import (
    _OPTIONS,
    DEFAULTS,
    DeliveryType,
    OnFull,
    Settings,
    TrackFormat,
    default_ini_path,
    resolve_settings,
)
from aicm._io.http import AsyncCostManagerClient
from aicm.collector import LocalCollector

SECRET = "sk-secret-do-not-leak-5f3a"


@attrs.frozen
class Sample:
    """One valid value of a setting: as a Python argument, as env/INI text, and resolved."""

    value: Any
    text: str
    expected: Any


# For each setting, a value that must win and one that must lose; both valid, the winner
# differs from the loser and from the default, so every outcome is told apart.
SAMPLES: dict[str, tuple[Sample, Sample]] = {
    "api_key": (
        Sample("key-win", "key-win", "key-win"),
        Sample("key-lose", "key-lose", "key-lose"),
    ),
    "api_base": (
        Sample("https://win.example.com/", "https://win.example.com/", "https://win.example.com"),
        Sample("https://lose.example.com", "https://lose.example.com", "https://lose.example.com"),
    ),
    "api_url": (Sample("v9/", "v9/", "/v9"), Sample("/lose", "/lose", "/lose")),
    "delivery_type": (
        Sample(DeliveryType.PERSISTENT_QUEUE, "persistent_queue", DeliveryType.PERSISTENT_QUEUE),
        Sample(DeliveryType.MEM_QUEUE, "MEM_QUEUE", DeliveryType.MEM_QUEUE),
    ),
    "delivery_on_full": (
        Sample(OnFull.RAISE, "raise", OnFull.RAISE),
        Sample("backpressure", "Backpressure", OnFull.BACKPRESSURE),
    ),
    "db_path": (Sample("/w/win.db", "/w/win.db", "/w/win.db"), Sample("/l.db", "/l.db", "/l.db")),
    "log_level": (Sample("debug", "debug", "DEBUG"), Sample("ERROR", "error", "ERROR")),
    "log_file": (Sample("/w/win.log", "/w/win.log", "/w/win.log"), Sample("/l", "/l", "/l")),
    "log_bodies": (Sample(True, "yes", True), Sample(False, "off", False)),
    "timeout": (Sample(2.5, "2.5", 2.5), Sample(7.0, "7", 7.0)),
    "queue_size": (Sample(17, "17", 17), Sample(23, "23", 23)),
    "max_batch_size": (Sample(5, "5", 5), Sample(9, "9", 9)),
    "batch_interval": (Sample(0.25, "0.25", 0.25), Sample(1.5, "1.5", 1.5)),
    "block_timeout": (Sample(3.0, "3", 3.0), Sample(4.0, "4.0", 4.0)),
    "max_attempts": (Sample(7, "7", 7), Sample(2, "2", 2)),
    "max_record_bytes": (Sample(1024, "1024", 1024), Sample(2048, "2048", 2048)),
    "backoff_base": (Sample(0.125, "0.125", 0.125), Sample(0.2, "0.2", 0.2)),
    "backoff_cap": (Sample(5.0, "5", 5.0), Sample(6.0, "6", 6.0)),
    "auth_retry_interval": (Sample(11.0, "11", 11.0), Sample(12.0, "12", 12.0)),
    "lease_seconds": (Sample(30.0, "30", 30.0), Sample(45.0, "45", 45.0)),
    "max_age": (Sample(100.0, "100", 100.0), Sample(200.0, "200", 200.0)),
    "close_timeout": (Sample(9.0, "9", 9.0), Sample(8.0, "8", 8.0)),
    "enforce_limits": (Sample(False, "off", False), Sample(True, "yes", True)),
    "disabled": (Sample(True, "ON", True), Sample(False, "No", False)),
    "limits_public_key": (
        Sample(
            "-----BEGIN PUBLIC KEY-----\nWIN\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\\nWIN\\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nWIN\n-----END PUBLIC KEY-----",
        ),
        Sample(
            "-----BEGIN PUBLIC KEY-----\nLOSE\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\\nLOSE\\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nLOSE\n-----END PUBLIC KEY-----",
        ),
    ),
    "track_format": (
        Sample(TrackFormat.LEGACY, "Legacy", TrackFormat.LEGACY),
        Sample("current", "CURRENT", TrackFormat.CURRENT),
    ),
}

# -- the resolution table ----------------------------------------------------------------------

# A value each setting refuses. Free-form strings (paths, the key, the URL suffix) refuse none.
BAD_TEXT: dict[str, str] = {
    "api_base": "ftp://x.example",
    "delivery_type": "carrier_pigeon",
    "delivery_on_full": "explode",
    "log_level": "LOUD",
    "log_bodies": "maybe",
    "timeout": "soon",
    "queue_size": "0",
    "max_batch_size": "1.5",
    "batch_interval": "-1",
    "block_timeout": "nan",
    "max_attempts": "three",
    "max_record_bytes": "-5",
    "backoff_base": "0",
    "backoff_cap": "inf",
    "auth_retry_interval": "x",
    "lease_seconds": "-0.1",
    "max_age": "never",
    "close_timeout": "0",
    "enforce_limits": "sometimes",
    "disabled": "kinda",
    "limits_public_key": "not-a-pem-key",
    "track_format": "v2",
}
FREE_FORM = {"api_key", "api_url", "db_path", "log_file"}


def write_ini(path: Path, text: str) -> Path:
    """Write an INI file (making its directory) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


_ABSENT: Any = object()


@attrs.frozen
class Row:
    """One resolution: what each level carries for ``option``, and what comes out."""

    option: str
    explicit: Any = _ABSENT
    env: str | None = None
    ini: str | None = None
    expected: Any = _ABSENT
    #: where a ConfigError's message starts ("{ini}" stands for "<the INI path>:2"), when
    #: the row is refused
    error: str | None = None

    def __str__(self) -> str:
        given = [
            f"{level}={value!r}"
            for level, value in (("explicit", self.explicit), ("env", self.env), ("ini", self.ini))
            if value is not _ABSENT and value is not None
        ]
        return f"{self.option}:{','.join(given) or 'nothing'}"


def _precedence_rows() -> list[Row]:
    """For each setting: each level wins over every level below it."""
    rows = []
    for name, (win, lose) in SAMPLES.items():
        # The API key is never read from the INI file: that level leaves the default.
        from_ini = win.expected if _OPTIONS[name].ini else DEFAULTS[name]
        rows += [
            Row(name, explicit=win.value, env=lose.text, ini=lose.text, expected=win.expected),
            Row(name, env=win.text, ini=lose.text, expected=win.expected),
            Row(name, ini=win.text, expected=from_ini),
        ]
    return rows


def _bad_input_rows() -> list[Row]:
    """For each checked setting: a bad value refused at each level, named where it came
    from; and never read when a higher level already decided."""
    rows = []
    for name, bad in BAD_TEXT.items():
        win = SAMPLES[name][0]
        rows += [
            Row(name, explicit=bad, error=name),
            Row(name, env=bad, error=_OPTIONS[name].env),
            Row(name, ini=bad, error="{ini}: " + name),
            Row(name, explicit=win.value, env=bad, ini=bad, expected=win.expected),
        ]
    return rows


def test_samples_cover_every_setting() -> None:
    """The table below names every setting there is, each with valid values."""
    assert set(SAMPLES) == set(_OPTIONS)
    for name, (win, lose) in SAMPLES.items():
        assert win.expected != lose.expected, name
        assert win.expected != DEFAULTS[name], name


@pytest.mark.parametrize("row", _precedence_rows() + _bad_input_rows(), ids=str)
def test_resolution_table(row: Row, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """explicit > environment > INI > default; a bad value is a ConfigError naming its source."""
    option = _OPTIONS[row.option]
    explicit = {} if row.explicit is _ABSENT else {row.option: row.explicit}
    if row.env is not None:
        monkeypatch.setenv(option.env, row.env)
    ini = write_ini(tmp_path / "aicm.ini", "[aicm]\n")
    if row.ini is not None:
        write_ini(ini, f"[aicm]\n{row.option} = {row.ini}\n")
    if row.error is not None:
        with pytest.raises(ConfigError) as info:
            resolve_settings(ini_path=ini, **explicit)
        assert str(info.value).startswith(row.error.replace("{ini}", f"{ini}:2"))
        bad = next(v for v in (row.explicit, row.env, row.ini) if v not in (_ABSENT, None))
        assert str(bad) in str(info.value)
        return
    settings = resolve_settings(ini_path=ini, **explicit)
    assert getattr(settings, row.option) == row.expected


def test_explicit_false_still_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit falsy value (log_bodies=False) counts as given; only None means absent."""
    monkeypatch.setenv("AICM_LOG_BODIES", "true")
    assert resolve_settings(log_bodies=False).log_bodies is False
    assert resolve_settings(log_bodies=None).log_bodies is True


def test_empty_environment_variable_counts_as_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AICM_X="" does not shadow the INI file: an empty variable is treated as not set."""
    ini = write_ini(tmp_path / "a.ini", "[aicm]\ntimeout = 4\n")
    monkeypatch.setenv("AICM_TIMEOUT", "")
    assert resolve_settings(ini_path=ini).timeout == 4.0


def test_ini_keys_may_carry_the_aicm_prefix_and_any_case(tmp_path: Path) -> None:
    """INI keys are read with or without ``aicm_`` and in any case; [AICM] is the section."""
    ini = write_ini(tmp_path / "a.ini", "[AICM]\nAICM_TIMEOUT = 3\nQueue_Size = 12\n")
    settings = resolve_settings(ini_path=ini)
    assert (settings.timeout, settings.queue_size) == (3.0, 12)


def test_ini_without_an_aicm_section_gives_defaults(tmp_path: Path) -> None:
    """Other sections of the INI file are none of the SDK's business."""
    ini = write_ini(tmp_path / "a.ini", "[other]\ntimeout = 3\n")
    assert resolve_settings(ini_path=ini).timeout == DEFAULTS["timeout"]


def test_unknown_ini_key_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key the SDK does not know is skipped, and the warning names the file, line and key."""
    ini = write_ini(tmp_path / "a.ini", "[aicm]\ntimeout = 3\ntimout = 4\n")
    with caplog.at_level(logging.WARNING, logger="aicm"):
        settings = resolve_settings(ini_path=ini)
    assert settings.timeout == 3.0
    assert f"{ini}:3" in caplog.text
    assert "timout" in caplog.text


# -- where the INI file is -------------------------------------------------------------------


def test_ini_path_argument_beats_env_beats_xdg_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aicm_ini_path > AICM_INI_PATH > $XDG_CONFIG_HOME/aicm/AICM.INI."""
    xdg = write_ini(tmp_path / "config" / "aicm" / "AICM.INI", "[aicm]\ntimeout = 1\n")
    from_env = write_ini(tmp_path / "env.ini", "[aicm]\ntimeout = 2\n")
    from_arg = write_ini(tmp_path / "arg.ini", "[aicm]\ntimeout = 3\n")
    assert default_ini_path() == xdg

    settings = resolve_settings()
    assert (settings.timeout, settings.ini_path) == (1.0, str(xdg))

    monkeypatch.setenv("AICM_INI_PATH", str(from_env))
    settings = resolve_settings()
    assert (settings.timeout, settings.ini_path) == (2.0, str(from_env))

    settings = resolve_settings(ini_path=from_arg)
    assert (settings.timeout, settings.ini_path) == (3.0, str(from_arg))


def test_ini_path_from_the_environment_mapping_given(tmp_path: Path) -> None:
    """An ``environ`` mapping passed in is the environment: its AICM_INI_PATH is honoured."""
    ini = write_ini(tmp_path / "x.ini", "[aicm]\nmax_attempts = 9\n")
    settings = resolve_settings(environ={"AICM_INI_PATH": str(ini)})
    assert settings.max_attempts == 9


def test_ini_path_expands_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``~/x.ini`` is read from the user's home directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    write_ini(tmp_path / "x.ini", "[aicm]\nqueue_size = 77\n")
    assert resolve_settings(ini_path="~/x.ini").queue_size == 77


def test_default_ini_path_falls_back_to_home_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without XDG_CONFIG_HOME the INI file is ~/.config/aicm/AICM.INI."""
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_ini_path() == tmp_path / ".config" / "aicm" / "AICM.INI"


def test_missing_ini_file_is_fine(tmp_path: Path) -> None:
    """An INI path that does not exist gives the defaults, with no error and no file made."""
    missing = tmp_path / "nowhere" / "AICM.INI"
    settings = resolve_settings(ini_path=missing)
    assert settings.timeout == DEFAULTS["timeout"]
    assert settings.ini_path == str(missing)
    assert not missing.parent.exists()


def test_ini_path_that_is_a_directory_raises(tmp_path: Path) -> None:
    """A directory where the INI file should be is a ConfigError naming the path."""
    with pytest.raises(ConfigError) as info:
        resolve_settings(ini_path=tmp_path)
    assert info.value.path == str(tmp_path)


# -- malformed INI files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param("# settings\napi_base = https://x.example\n", 2, "header", id="no-header"),
        pytest.param("[aicm]\ntimeout = 3\nthis line is not a setting\n", 3, "INI", id="bad-line"),
        pytest.param(
            "[aicm]\ntimeout = 3\n\n; again\ntimeout = 4\n", 5, "timeout", id="duplicate-key"
        ),
        pytest.param("[aicm]\n[other]\n[aicm]\n", 3, "aicm", id="duplicate-section"),
        pytest.param(
            "[aicm]\ntimeout = 3\ndelivery_type = bogus\n", 3, "delivery_type", id="bad-enum"
        ),
        pytest.param("[aicm]\n\n\ntimeout = soon\n", 4, "timeout", id="bad-number"),
        pytest.param("[aicm]\nlog_bodies = maybe\n", 2, "log_bodies", id="bad-bool"),
    ],
)
def test_malformed_ini_names_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    """A malformed INI raises ConfigError whose message, .path and .line point at the problem."""
    ini = write_ini(tmp_path / "bad.ini", text)
    with pytest.raises(ConfigError) as info:
        resolve_settings(ini_path=ini)
    error = info.value
    assert error.path == str(ini)
    assert error.line == line
    assert str(error).startswith(f"{ini}:{line}: ")
    assert words in str(error)


PASTED_KEY = "sk-live-PASTED-1n-the-ini-9f8e7d"


def error_texts(error: BaseException) -> list[str]:
    """str, repr and args of an error and of every error chained behind it."""
    texts: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return texts


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param(f"{PASTED_KEY}\n[aicm]\n", 1, id="no-header"),
        pytest.param(f"aicm_api_key = {PASTED_KEY}\n", 1, id="no-header-setting"),
        pytest.param(f"[aicm]\ntimeout = 3\nBearer {PASTED_KEY}\n", 3, id="bad-line"),
        pytest.param(f"[aicm]\n{PASTED_KEY}\n", 2, id="bad-line-bare"),
        pytest.param(
            f"[aicm]\napi_key = {PASTED_KEY}\napi_key = {PASTED_KEY}\n", 3, id="duplicate-key"
        ),
    ],
)
def test_malformed_ini_errors_never_echo_the_line(tmp_path: Path, text: str, line: int) -> None:
    """A malformed INI holding a pasted key: the error names file and line, and neither it
    nor anything chained behind it (configparser quotes whole lines) holds the key."""
    ini = write_ini(tmp_path / "bad.ini", text)
    with pytest.raises(ConfigError) as info:
        resolve_settings(ini_path=ini)
    assert (info.value.path, info.value.line) == (str(ini), line)
    leaks = [t for t in error_texts(info.value) if PASTED_KEY in t]
    assert leaks == []


def test_an_ini_file_that_is_not_utf8_keeps_its_bytes_out_of_the_error(tmp_path: Path) -> None:
    """Undecodable bytes: ConfigError naming the line; the decode error (which holds the
    whole file) is not chained."""
    ini = tmp_path / "latin.ini"
    ini.write_bytes(f"[aicm]\n# {PASTED_KEY}\ntimeout = 3 \xb5s\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8") as info:
        resolve_settings(ini_path=ini)
    assert info.value.line == 3
    assert [t for t in error_texts(info.value) if PASTED_KEY in t] == []


def test_bad_value_line_is_its_line_in_the_aicm_section(tmp_path: Path) -> None:
    """A key that also appears in another section is reported at its line in [aicm]."""
    ini = write_ini(tmp_path / "bad.ini", "[other]\ntimeout = 5\n[aicm]\ntimeout = soon\n")
    with pytest.raises(ConfigError) as info:
        resolve_settings(ini_path=ini)
    assert info.value.line == 4


def test_malformed_ini_is_reported_from_the_env_path_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An INI found through AICM_INI_PATH is checked just the same."""
    ini = write_ini(tmp_path / "env.ini", "[aicm]\nqueue_size = -3\n")
    monkeypatch.setenv("AICM_INI_PATH", str(ini))
    with pytest.raises(ConfigError) as info:
        resolve_settings()
    assert (info.value.path, info.value.line) == (str(ini), 2)


# -- the API key -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["api_key", "AICM_API_KEY", "aicm_api_key"])
def test_api_key_in_ini_is_ignored_and_warned_about(
    key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An API key in the INI file is never used; a warning says so without showing it."""
    ini = write_ini(tmp_path / "a.ini", f"[aicm]\ntimeout = 3\n{key} = {SECRET}\n")
    with caplog.at_level(logging.WARNING, logger="aicm"):
        settings = resolve_settings(ini_path=ini)
    assert settings.api_key is None
    assert settings.timeout == 3.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{ini}:3" in warnings[0].getMessage()
    assert "never reads API keys from files" in warnings[0].getMessage()
    assert SECRET not in caplog.text


def test_api_key_comes_from_argument_or_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a key in the INI and AICM_API_KEY set, the variable's key is the one used."""
    ini = write_ini(tmp_path / "a.ini", "[aicm]\napi_key = from-file\n")
    monkeypatch.setenv("AICM_API_KEY", "from-env")
    assert resolve_settings(ini_path=ini).require_api_key() == "from-env"
    assert resolve_settings(ini_path=ini, api_key="from-arg").require_api_key() == "from-arg"


def test_settings_repr_never_shows_the_key() -> None:
    """repr(Settings) (and str) leave the key out but show the rest."""
    settings = resolve_settings(api_key=SECRET, api_base="https://x.example")
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert "https://x.example" in repr(settings)
    assert settings.key_fingerprint
    assert SECRET not in settings.key_fingerprint


def test_missing_key_is_fine_until_it_is_needed() -> None:
    """Resolving settings without a key works; require_api_key() raises MissingApiKeyError."""
    settings = resolve_settings()
    assert settings.api_key is None
    assert settings.key_fingerprint == ""
    with pytest.raises(MissingApiKeyError, match="AICM_API_KEY") as info:
        settings.require_api_key()
    assert isinstance(info.value, ConfigError)


@pytest.mark.anyio
async def test_missing_key_raises_at_first_request_not_construction(
    collector: LocalCollector,
) -> None:
    """A client builds without a key; its first request raises before anything is sent."""
    async with AsyncCostManagerClient(aicm_api_base=collector.api_base) as client:
        with pytest.raises(MissingApiKeyError):
            await client.track([{"api_id": "a", "service_key": "s", "payload": {}}])
        with pytest.raises(MissingApiKeyError):
            await client.get_configs()
    stats = collector.stats()
    assert all(not counts for counts in stats["requests"].values())


def test_import_needs_no_key_nor_config(tmp_path: Path) -> None:
    """`import aicm` in a clean environment (no key, no INI) succeeds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    code = "import aicm, aicm._io.http, aicm._sync.tracker; print('ok')"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert not (tmp_path / "cfg").exists()


@pytest.mark.anyio
async def test_sdk_never_writes_the_ini(tmp_path: Path, collector: LocalCollector) -> None:
    """Resolving settings and using a client leave the INI file and config dir untouched."""
    ini = write_ini(
        tmp_path / "config" / "aicm" / "AICM.INI", f"[aicm]\napi_base = {collector.api_base}\n"
    )
    before = (ini.read_bytes(), ini.stat().st_mtime_ns)
    resolve_settings()
    async with AsyncCostManagerClient(aicm_api_key=SECRET) as client:
        await client.track([{"api_id": "a", "service_key": "s", "payload": {"n": 1}}])
    assert (ini.read_bytes(), ini.stat().st_mtime_ns) == before
    assert sorted(p.name for p in ini.parent.iterdir()) == ["AICM.INI"]
    assert collector.count("track") == 1


def test_bad_values_cover_every_checked_setting() -> None:
    """Every setting is either free-form or has a refused sample below."""
    assert set(BAD_TEXT) | FREE_FORM == set(_OPTIONS)
    assert not set(BAD_TEXT) & FREE_FORM


@pytest.mark.parametrize("value", [True, 0, -1, 2.5])
def test_integer_settings_refuse_bools_zero_negatives_and_fractions(value: object) -> None:
    """queue_size must be a positive whole number: True, 0, -1 and 2.5 are refused."""
    with pytest.raises(ConfigError, match="queue_size"):
        resolve_settings(queue_size=value)


def test_unknown_explicit_setting_is_a_type_error() -> None:
    """A misspelt keyword is a TypeError naming it, like any Python call."""
    with pytest.raises(TypeError, match="timout"):
        resolve_settings(timout=3)


def test_settings_api_root_joins_base_and_url() -> None:
    """api_root is api_base + api_url, normalised (no double or missing slash)."""
    settings = resolve_settings(api_base="http://h.example:8/", api_url="api/v2/")
    assert settings.api_root == "http://h.example:8/api/v2"
    assert resolve_settings(api_url="").api_root == "https://aicostmanager.com"


def test_defaults_are_the_documented_ones() -> None:
    """With nothing set, every setting has the default documented in docs/settings.md."""
    settings = resolve_settings()
    assert isinstance(settings, Settings)
    assert settings.api_root == "https://aicostmanager.com/api/v1"
    assert settings.delivery_on_full is OnFull.BLOCK
    assert (settings.queue_size, settings.max_batch_size, settings.batch_interval) == (
        10_000,
        1000,
        0.5,
    )
    assert (settings.timeout, settings.max_attempts, settings.max_record_bytes) == (
        10.0,
        3,
        65536,
    )
    for name, default in DEFAULTS.items():
        assert getattr(settings, name) == default


@pytest.mark.parametrize(
    ("option", "value", "shown"),
    [
        pytest.param("max_batch_size", math.inf, "got inf", id="int-option-infinity"),
        pytest.param("queue_size", -math.inf, "got -inf", id="int-option-minus-infinity"),
        pytest.param("timeout", 10**400, "an integer of 1329 bits", id="float-option-huge-int"),
        pytest.param("max_batch_size", -(10**5000), "an integer of 16610 bits", id="huge-negative"),
    ],
)
def test_numbers_beyond_range_are_config_errors(option: str, value: object, shown: str) -> None:
    """An infinity where an integer goes, or an integer past any float (too long even to
    print): ConfigError naming the option, never OverflowError."""
    with pytest.raises(ConfigError, match=f"^{option} must be a positive") as info:
        resolve_settings(**{option: value})
    assert shown in str(info.value)
