"""What the service-API tests share: usage tracked into the local collector, and its price."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import genai_prices

from aicm._sync.client import CostManagerClient
from aicm.collector import LocalCollector

API_KEY = "test-key-0123456789abcdef"
_ids = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test in this run uses."""
    return f"{prefix}-{next(_ids)}"


def track(
    collector: LocalCollector,
    *,
    customer: str | None,
    input_tokens: int,
    output_tokens: int,
    service_key: str = "openai::gpt-5-mini",
    timestamp: str | None = None,
) -> str:
    """Track one call's usage into ``collector`` through the SDK; returns its response_id."""
    response_id = unique("svc-api")
    record: dict[str, Any] = {
        "api_id": service_key.partition("::")[0],
        "service_key": service_key,
        "response_id": response_id,
        "payload": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
    if customer is not None:
        record["client_customer_key"] = customer
    if timestamp is not None:
        record["timestamp"] = timestamp
    with CostManagerClient(aicm_api_key=API_KEY, aicm_api_base=collector.api_base) as client:
        client.track([record])
    return response_id


def price(input_tokens: int, output_tokens: int, model: str = "gpt-5-mini") -> Decimal:
    """What OpenAI's ``model`` charges for the tokens in USD, by genai-prices itself."""
    usage = genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    result = genai_prices.calc_price(usage, model, provider_id="openai")
    # The collector answers in floats: the same amount, as the same float reads back.
    return Decimal(str(float(result.total_price)))
