"""The management API's models: unknown fields kept, malformed answers named (pure, no I/O)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from aicm._core.exceptions import UnexpectedAnswerError
from aicm._core.service_models import (
    Customer,
    UsageLimitProgress,
    UsageRollup,
    structure_answer,
    structure_page,
)


def test_unknown_fields_are_kept_not_fatal() -> None:
    """A field the SDK does not know lands in ``extra``; the known ones are typed."""
    customer = structure_answer(
        {"uuid": "u1", "customer_key": "acme", "tier": "gold", "tags": ["a"]},
        Customer,
        where="test",
    )
    assert customer.customer_key == "acme"
    assert customer.extra == {"tier": "gold", "tags": ["a"]}


def test_money_is_decimal_from_numbers_or_strings() -> None:
    """Costs read exactly whether the service sends a number or a string."""
    rollup = structure_answer(
        {"service_id": "s", "date": "2025-01-01", "quantity": 3, "cost": "0.10"},
        UsageRollup,
        where="test",
    )
    assert rollup.cost == Decimal("0.10")
    progress = structure_answer(
        {
            "uuid": "l1",
            "threshold_type": "limit",
            "amount": 10,
            "period": "day",
            "active": True,
            "current_spend": 2.5,
            "remaining_amount": "7.5",
        },
        UsageLimitProgress,
        where="test",
    )
    assert progress.current_spend + progress.remaining_amount == progress.amount


def test_a_malformed_answer_names_every_field_at_fault() -> None:
    """A missing field and a wrong type are both named in one UnexpectedAnswerError."""
    with pytest.raises(UnexpectedAnswerError) as caught:
        structure_answer({"uuid": 7, "name": None}, Customer, where="GET /customers/x/")
    message = str(caught.value)
    assert message.startswith("GET /customers/x/")
    assert "uuid" in message
    assert "customer_key" in message


def test_a_page_with_a_non_list_of_results_is_refused() -> None:
    """``results`` that is not a list is an UnexpectedAnswerError, not a TypeError."""
    with pytest.raises(UnexpectedAnswerError, match="results"):
        structure_page({"count": 1, "results": {"a": 1}}, Customer, where="test")


def test_the_strict_bool_hook_leaves_configs_as_they_were() -> None:
    """The management models refuse "true" for a bool, but the shared converter's other
    users are untouched: a served config's handling_config keeps "true" and 1 as given
    (they are data the config's own reader interprets), and a webhook's bool is strict."""
    from aicm._core.models import ConfigsResponse, structure_config
    from aicm._core.service_models import Webhook

    served = structure_config(
        {
            "service_configs": [
                {
                    "config_id": "c1",
                    "api_id": "heygen",
                    "handling_config": {"stream": "true", "enabled": 1, "on": True},
                }
            ]
        },
        ConfigsResponse,
        where="configs",
    )
    (config,) = served.service_configs
    assert config.handling_config == {"stream": "true", "enabled": 1, "on": True}
    with pytest.raises(UnexpectedAnswerError, match="active"):
        structure_answer(
            {"uuid": "w", "url": "https://h.test", "active": "true", "tolerance": 1},
            Webhook,
            where="test",
        )
