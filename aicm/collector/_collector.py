"""The collector's state and request handling without HTTP (layer 6): store, faults, configs."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

import anyio

from aicm._core.exceptions import ConfigError
from aicm._core.jsonplain import loads
from aicm._core.wire import (
    BadRequest,
    Kind,
    configs_document,
    etag_for,
    etag_matches,
    normalise_configs,
    parse_batch,
    plan_batch,
)
from aicm.collector._api_requests import ApiObjects
from aicm.collector._faults import FaultInjector, Faults, RequestFaults
from aicm.collector._limits import LimitBook, LimitError, UsageRow, api_key_id, rows_from_records
from aicm.collector._logic import Answer, api_key_matches, bearer_token, error_answer
from aicm.collector._signing import SigningKey
from aicm.collector._stats import CollectorStats
from aicm.collector._store import GroupWriter, RecordStore
from aicm.collector._usage import custom_prices

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Collector", "CollectorOptions", "ConfigsSource", "default_data_dir", "load_configs"]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/aicm/collector`` (``~/.local/share/aicm/collector``): the signing key
    and the usage limits of ``aicm serve``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aicm" / "collector"


#: Configs as given in Python: ``{"service_configs": [...]}`` or the bare list.
ConfigsSource: TypeAlias = Sequence[Mapping[str, Any]] | Mapping[str, Any]


class CollectorOptions(TypedDict, total=False):
    """What a collector holds, as `Collector`, ``LocalCollector`` and ``create_app``
    take it: the configs it serves (``configs``, or a JSON/YAML ``configs_path``), the
    SQLite file of its records (``db_path``; None keeps them in memory), the ``seed`` of
    its faults, and the ``data_dir`` of its signing key and usage limits."""

    configs: ConfigsSource | None
    configs_path: str | os.PathLike[str] | None
    db_path: str | os.PathLike[str] | None
    seed: int
    data_dir: str | os.PathLike[str] | None


def load_configs(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read service configs from a JSON file; ``ConfigError`` naming the file if unusable."""
    try:
        document = loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the configs file: {exc.strerror}", path=str(path)) from exc
    except ValueError as exc:
        raise ConfigError(f"the configs file is not valid JSON: {exc}", path=str(path)) from exc
    try:
        return normalise_configs(document, source="configs file")
    except ValueError as exc:
        raise ConfigError(str(exc), path=str(path)) from exc


def data_dir_for(
    configs: object, configs_path: object, data_dir: str | os.PathLike[str] | None
) -> tuple[str, tempfile.TemporaryDirectory[str] | None]:
    """The data directory to use, and the temporary one made when ``data_dir`` is None
    (its owner removes it); ``ValueError`` when both configs and a configs file are given."""
    if configs is not None and configs_path is not None:
        raise ValueError("give configs or configs_path, not both")
    if data_dir is not None:
        return os.fspath(data_dir), None
    temporary = tempfile.TemporaryDirectory(prefix="aicm-collector-")
    return temporary.name, temporary


class Collector:
    """Everything the collector holds and does, minus HTTP.

    ``ingest`` and ``configs_answer`` are called by the web app with a request's bytes
    and give back an ``Answer``; the store, fault injector and statistics are shared with
    the Python API of ``LocalCollector``.
    """

    def __init__(
        self,
        *,
        faults: Faults | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        **options: Unpack[CollectorOptions],
    ) -> None:
        configs, configs_path = options.get("configs"), options.get("configs_path")
        # No data directory: a temporary one, removed on close (tests, the demo).
        directory, self._own_data_dir = data_dir_for(configs, configs_path, options.get("data_dir"))
        self.data_dir = Path(directory)
        if prices is None:
            from aicm.cli._pricing import default_prices

            prices = default_prices()
        self._prices = prices
        try:
            self.limits = LimitBook(self.data_dir, self.prices)
        except LimitError as exc:
            raise ConfigError(str(exc)) from exc
        self.signing_key = SigningKey(self.data_dir)
        self._forger = SigningKey(None)  # the forge_limits fault's stand-in key
        initial = load_configs(configs_path) if configs_path is not None else configs
        self._configs_lock = threading.Lock()
        self._configs: list[dict[str, Any]] = []
        self._configs_cache: dict[str | None, tuple[bytes, str]] = {}
        self.set_configs(initial if initial is not None else [])
        self.faults = FaultInjector(faults, seed=options.get("seed", 0))
        self.stats = CollectorStats()
        self.store = RecordStore(options.get("db_path"))
        self._rows_lock = threading.Lock()
        self._stored_version = 0  # bumped whenever records are stored or forgotten
        self._rows_cache: tuple[tuple[int, float], list[UsageRow]] | None = None
        self._writer = GroupWriter(self.store)
        #: customers, webhooks and custom services of the management API (in the store)
        self.api_objects = ApiObjects(self.store)

    def prices(self) -> dict[str, Mapping[str, float]]:
        """The price table every answer prices by: the collector's table (the shipped REST
        services unless given), and the active custom services created through the API;
        models neither lists are priced by genai-prices."""
        return {**self._prices, **custom_prices(self.api_objects.all("custom_services"))}

    def set_configs(self, configs: ConfigsSource) -> None:
        """Serve ``configs`` from now on (their ETag changes with them)."""
        normalised = normalise_configs(configs)
        with self._configs_lock:
            self._configs = normalised
            self._configs_cache = {}

    def configs(self) -> list[dict[str, Any]]:
        """The service configs served."""
        with self._configs_lock:
            return list(self._configs)

    def configs_answer(self, api_id: str | None, if_none_match: str | None) -> Answer:
        """The ``GET /configs`` answer: 200 with an ETag, or 304 when the client has it."""
        with self._configs_lock:
            cached = self._configs_cache.get(api_id)
            if cached is None:
                body = configs_document(self._configs, api_id)
                cached = self._configs_cache[api_id] = (body, etag_for(body))
        body, etag = cached
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag_matches(if_none_match, etag):
            return Answer(304, b"", headers)
        return Answer(200, body, headers)

    async def admit(
        self, plan: RequestFaults, authorization: str | None, user_agent: str | None
    ) -> Answer | None:
        """Count a request and apply the faults that come before any work: the answer that
        refuses it (an injected failure, a missing or wrong API key), else None."""
        self.stats.request_arrived(user_agent, authorization is not None)
        faults = plan.faults
        if faults.latency:
            self.stats.fault("latency")
            await anyio.sleep(faults.latency)
        if plan.failure is not None:
            self.stats.fault(plan.failure)
            extra = {}
            if faults.retry_after is not None:
                extra["Retry-After"] = _format_seconds(faults.retry_after)
            return error_answer(faults.failure_status, "injected failure (collector fault)", extra)
        if faults.require_api_key is not None and not api_key_matches(
            authorization, faults.require_api_key
        ):
            self.stats.fault("unauthorized")
            return error_answer(
                401, "missing or invalid API key", {"WWW-Authenticate": 'Bearer realm="aicm"'}
            )
        return None

    async def ingest(
        self,
        kind: Kind,
        body: bytes,
        *,
        user_agent: str | None,
        faults: Faults,
        authorization: str | None = None,
    ) -> Answer:
        """Handle one ``/track`` or ``/track-usage`` body: check, store, answer."""
        try:
            records = parse_batch(body, kind)
        except BadRequest as exc:
            return error_answer(exc.status_code, exc.detail)
        plan = plan_batch(
            records,
            kind,
            reject_ids=faults.reject_response_ids,
            reject_status=faults.reject_status,
        )
        stored = await self._writer.add(
            kind, plan.to_store, received_at=time.time(), user_agent=user_agent
        )
        if stored:
            with self._rows_lock:
                self._stored_version += 1
        self.stats.records_seen(
            kind,
            received=len(records),
            stored=stored,
            duplicates=len(plan.to_store) - stored,
            errors=plan.errors,
        )
        if plan.rejected:
            self.stats.fault("reject", plan.rejected)
        limits = self.triggered_limits(authorization, forged=faults.forge_limits)
        return Answer(plan.status_code, plan.body(limits))

    # -- usage limits ------------------------------------------------------------------

    def usage_rows(self, now: dt.datetime) -> list[UsageRow]:
        """The stored usage the limits' current periods may count (none without limits)."""
        start = self.limits.earliest_start(now)
        if start is None:
            return []
        # A day of slack: a record arrives after the event it reports.
        after = start.timestamp() - 86400
        with self._rows_lock:
            # Read and decoded again only when records were stored since the last time.
            key = (self._stored_version, after)
            if self._rows_cache is not None and self._rows_cache[0] == key:
                return self._rows_cache[1]
            rows = rows_from_records(
                self.store.records_since("track", after),
                self.store.records_since("track_usage", after),
            )
            self._rows_cache = (key, rows)
            return rows

    def triggered_limits(
        self,
        authorization: str | None,
        *,
        now: dt.datetime | None = None,
        forged: bool = False,
    ) -> dict[str, Any]:
        """The ``triggered_limits`` of an answer to the key in ``authorization``.

        ``{}`` while the collector has never held a limit; from then on a signed envelope
        (its list possibly empty), so an SDK also learns when a limit is gone. ``forged``
        signs it with a throwaway key instead (the ``forge_limits`` fault).
        """
        if not self.limits.ever_had_limits:
            return {}
        now = now or dt.datetime.now(dt.timezone.utc)
        key_id = api_key_id(bearer_token(authorization))
        events = self.limits.triggered(key_id, self.usage_rows(now), now)
        signer = self._forger if forged else self.signing_key
        return signer.triggered_limits(key_id, events)

    def limits_progress(self, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Every limit with its current period's spend and what remains."""
        now = now or dt.datetime.now(dt.timezone.utc)
        return self.limits.progress(self.usage_rows(now), now)

    def clear(self) -> None:
        """Forget the stored records, the statistics, the usage limits and the API objects
        (a clean slate for the next test); the faults and the signing key stay as they are."""
        self.store.clear()
        with self._rows_lock:
            self._stored_version += 1
        self.stats.clear()
        self.limits.clear()

    def close(self) -> None:
        """Close the store (removing it if it is a temporary file, and a temporary data
        directory with it)."""
        self.store.close()
        if self._own_data_dir is not None:
            self._own_data_dir.cleanup()


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)
