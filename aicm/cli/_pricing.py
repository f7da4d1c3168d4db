"""Price tables and the cost of usage: pure functions, no I/O but reading the table (layer 6).

`price_usage()` prices one record: by the table when it lists the service, else by
``genai-prices`` (pydantic's maintained price data) for a model it knows; anything else is
unpriced, never $0.

A price table maps a service (a ``service_key``, or a ``service_id`` of a handling config)
(a ``"vendor::model"`` key is priced by its model when the table has no entry of its own)
to its unit rates in USD: ``{"my-finetune": {"input_tokens": 2.5e-07, "output_tokens":
2e-06}, "api.heygen.com/v2/streaming.list": {"duration": 0.0125}}``. The cost of one
record is the sum over its usage metrics of ``amount * rate``; metrics without a rate cost
nothing. The default table ships with aicm as ``aicm/cli/prices.json`` and lists REST
services only: models are priced by genai-prices.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from .._core.exceptions import shown
from .._providers.normalize import PRICE_PROVIDERS, normalize_usage
from ._common import CommandError

__all__ = [
    "PriceLine",
    "PriceTable",
    "Priced",
    "cost_of",
    "default_prices",
    "load_prices",
    "parse_prices",
    "price_usage",
    "rates_for",
    "usage_amounts",
]

PriceTable = Mapping[str, Mapping[str, float]]
"""Unit rates in USD by service, then by usage metric."""

SCALAR_METRIC = "units"
"""The metric name of a bare-number usage whose service has no single priced metric."""


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (not a number, NaN, infinite, or an integer
    beyond any float)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def parse_prices(data: Any, *, source: str = "price table") -> dict[str, dict[str, float]]:
    """Check JSON-like ``data`` is a price table and return it; ``CommandError`` naming
    every problem otherwise."""
    if not isinstance(data, dict):
        raise CommandError(f"{source}: expected a JSON object of services, got {_kind(data)}")
    problems: list[str] = []
    table: dict[str, dict[str, float]] = {}
    for service, rates in data.items():
        if not isinstance(rates, dict):
            problems.append(f"{service!r}: expected an object of unit rates, got {_kind(rates)}")
            continue
        checked: dict[str, float] = {}
        for metric, rate in rates.items():
            number = _finite(rate)
            if number is None or number < 0:
                problems.append(
                    f"{service!r}.{metric!r}: a rate must be a number >= 0, got {shown(rate)}"
                )
            else:
                checked[str(metric)] = number
        table[str(service)] = checked
    if problems:
        raise CommandError(f"{source}: " + "; ".join(problems))
    return table


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def load_prices(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """The price table in the JSON file ``path``, or the default one when None."""
    if path is None:
        return default_prices()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"no price table at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read the price table {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
        ) from None
    return parse_prices(data, source=str(path))


def default_prices() -> dict[str, dict[str, float]]:
    """The small price table shipped with aicm: REST services (models are priced by
    genai-prices)."""
    text = resources.files("aicm.cli").joinpath("prices.json").read_text(encoding="utf-8")
    return parse_prices(json.loads(text), source="aicm/cli/prices.json")


def usage_amounts(usage: Any, rates: Mapping[str, float] | None = None) -> dict[str, float]:
    """The numeric metrics of one record's usage, flattened: ``{"a": {"b": 2}}`` -> ``{"a.b": 2}``.

    A bare number (a handling config that maps one field) is named after the service's
    only priced metric when it has exactly one (``duration`` for a per-second service),
    else ``units``. Strings, booleans and lists are not amounts and are left out.
    """
    number = _finite(usage)
    if number is not None:
        name = next(iter(rates)) if rates is not None and len(rates) == 1 else SCALAR_METRIC
        return {name: number}
    amounts: dict[str, float] = {}
    if isinstance(usage, Mapping):
        _flatten(usage, "", amounts)
    return amounts


def _flatten(usage: Mapping[str, Any], prefix: str, into: dict[str, float]) -> None:
    for key, value in usage.items():
        name = f"{prefix}{key}"
        number = _finite(value)
        if number is not None:
            into[name] = into.get(name, 0.0) + number
        elif isinstance(value, Mapping):
            _flatten(value, name + ".", into)


def rates_for(prices: PriceTable, service: str) -> Mapping[str, float] | None:
    """The rates of ``service``; a ``"vendor::model"`` key falls back to the model's rates."""
    rates = prices.get(service)
    if rates is None and "::" in service:
        rates = prices.get(service.partition("::")[2])
    return rates


def cost_of(amounts: Mapping[str, float], rates: Mapping[str, float] | None) -> float:
    """USD for ``amounts`` of usage at ``rates`` (0.0 for a service with no rates)."""
    if not rates:
        return 0.0
    return math.fsum(amount * rates.get(metric, 0.0) for metric, amount in amounts.items())


@attrs.frozen(kw_only=True)
class PriceLine:
    """One priced metric of a record: its amount, USD per unit of it, and what it costs."""

    metric: str
    quantity: float
    rate: float
    cost: float


@attrs.frozen(kw_only=True)
class Priced:
    """The price of one record: the amounts it was priced by, USD, and whether it was.

    ``lines`` splits ``cost`` by priced metric: a table's record has one line per metric
    it has a rate for; a genai-prices record has ``input_tokens`` and ``output_tokens``
    (each at genai-prices' price for that side of the call, cached and audio tokens
    included) and ``other`` for whatever the model charges beyond them (per request, say).
    An unpriced record has none.
    """

    amounts: dict[str, float]
    cost: float
    priced: bool
    source: str  # "table", "genai-prices" or "" (unpriced)
    lines: tuple[PriceLine, ...] = ()


def price_usage(prices: PriceTable, service: str, usage: Any) -> Priced:
    """The price of one record of ``service`` (``"vendor::model"``, a model, a REST service).

    The table's rates win (a user's override file, the shipped REST services); else a model
    is priced by ``genai-prices`` from its usage in that package's vocabulary (see
    `aicm._providers.normalize.normalize_usage()`). A service neither knows, or a usage
    in no known shape, is ``priced=False``: never counted as $0.
    """
    rates = rates_for(prices, service)
    if rates:
        amounts = usage_amounts(usage, rates)
        lines = tuple(
            PriceLine(
                metric=metric, quantity=amount, rate=rates[metric], cost=amount * rates[metric]
            )
            for metric, amount in sorted(amounts.items())
            if metric in rates
        )
        return Priced(
            amounts=amounts,
            cost=cost_of(amounts, rates),
            priced=True,
            source="table",
            lines=lines,
        )
    vendor, sep, model = service.partition("::")
    if not sep:
        vendor, model = "", service
    counts = normalize_usage(vendor or None, usage)
    if counts:
        sides = _genai_price(model, vendor, counts)
        if sides is not None:
            amounts = {k: float(v) for k, v in counts.items()}
            total, input_cost, output_cost, other_cost = sides
            split = (
                ("input_tokens", amounts["input_tokens"], input_cost),
                ("output_tokens", amounts["output_tokens"], output_cost),
                ("other", 1.0, other_cost),
            )
            lines = tuple(
                # The rate of a side is its average: cached or audio tokens cost otherwise.
                PriceLine(
                    metric=metric,
                    quantity=quantity,
                    rate=cost / quantity if quantity else cost,
                    cost=cost,
                )
                for metric, quantity, cost in split
                if cost
            )
            return Priced(
                amounts=amounts, cost=total, priced=True, source="genai-prices", lines=lines
            )
    return Priced(amounts=usage_amounts(usage), cost=0.0, priced=False, source="")


def _genai_price(
    model: str, vendor: str, counts: Mapping[str, int]
) -> tuple[float, float, float, float] | None:
    """USD for ``counts`` of ``model`` at genai-prices' current rates, as (total, input
    side, output side, the rest); None when unknown."""
    try:
        import genai_prices
    except ImportError:  # the cli/collector extras install it; without it only tables price
        return None
    provider = PRICE_PROVIDERS.get(vendor) if vendor else None
    if vendor and provider is None:
        return None  # a vendor genai-prices does not know: do not guess another's price
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = genai_prices.calc_price(
                genai_prices.Usage(**counts), model, provider_id=provider
            )
    except (LookupError, ValueError, TypeError):
        return None
    total = _finite(float(result.total_price))
    if total is None:
        return None
    rest = result.total_price - result.input_price - result.output_price
    return total, float(result.input_price), float(result.output_price), float(rest)
