"""Configs of the wrong shape: one ConfigError naming every field at fault, never cattrs'
"While structuring ServiceConfig (1 sub-exception)"."""

from __future__ import annotations

from typing import Any

import pytest

from aicm import ConfigError, CostManagerConfig, ServiceConfig
from aicm._api.configs import load_service_configs
from aicm._core.models import ConfigsResponse, structure_config


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            {"config_id": "c", "api_id": "a", "handling_config": "not an object"},
            "handling_config: expected an object, got str",
        ),
        (
            {"config_id": "c", "api_id": "a", "handling_config": ["tracked_methods"]},
            "handling_config: expected an object, got list",
        ),
        (
            {"config_id": "c", "api_id": "a", "manual_usage_schema": 3},
            "manual_usage_schema: expected an object, got int",
        ),
        ({"config_id": None, "api_id": "a"}, "config_id: expected a string, got None"),
        ({"api_id": "a"}, "config_id: required field missing"),
        ("cfg", "expected an object, got str"),
    ],
)
def test_a_service_config_of_the_wrong_shape_names_the_field(data: Any, problem: str) -> None:
    """Each wrong shape raises ConfigError saying which field, what was expected and what came."""
    with pytest.raises(ConfigError) as info:
        structure_config(data, ServiceConfig, where="cfg")
    assert str(info.value) == f"cfg: {problem}"
    assert "sub-exception" not in str(info.value)


def test_every_fault_is_named_at_once() -> None:
    """Several faults in one answer are all reported, each with its path."""
    data = {
        "service_configs": [
            {"config_id": "ok", "api_id": "a", "handling_config": {}},
            {"config_id": "c", "api_id": 5, "handling_config": "x"},
            "junk",
        ],
        "triggered_limits": [],
    }
    with pytest.raises(ConfigError) as info:
        structure_config(data, ConfigsResponse, where="answer")
    assert str(info.value) == (
        "answer: service_configs[1].api_id: expected a string, got int; "
        "service_configs[1].handling_config: expected an object, got str; "
        "service_configs[2]: expected an object, got str; "
        "triggered_limits: expected an object, got list"
    )


@pytest.mark.parametrize(
    "data",
    [
        {"config_id": "c", "api_id": "a"},
        {"config_id": "c", "api_id": "a", "handling_config": None, "manual_usage_schema": None},
        {"config_id": "c", "api_id": "a", "handling_config": {}, "manual_usage_schema": {}},
        {"config_id": "c", "api_id": "a", "handling_config": {"tracked_methods": ["x.y"]}},
    ],
)
def test_well_formed_configs_still_structure(data: dict[str, Any]) -> None:
    """Configs of the right shape structure as before, absent and null fields as None."""
    config = structure_config(data, ServiceConfig, where="cfg")
    assert (config.config_id, config.api_id) == ("c", "a")
    assert config.handling_config == data.get("handling_config")


def test_an_offline_config_names_its_place_id_and_field() -> None:
    """load_service_configs says which list entry, which config and which field."""
    configs = [
        {"config_id": "good", "api_id": "calc", "handling_config": {}},
        {"config_id": "cfg", "api_id": "calc", "handling_config": "not an object"},
    ]
    with pytest.raises(ConfigError) as info:
        load_service_configs(configs)
    assert str(info.value) == (
        "configs[1]: malformed config 'cfg': handling_config: expected an object, got str"
    )


def test_an_offline_config_without_a_string_id_is_named_by_place() -> None:
    """A config whose config_id is not a string is named by its place, every fault listed."""
    with pytest.raises(ConfigError) as info:
        load_service_configs({"service_configs": [{"config_id": 1, "handling_config": 2}]})
    assert str(info.value) == (
        "configs[0]: malformed config: config_id: expected a string, got int; "
        "api_id: required field missing; handling_config: expected an object, got int"
    )


def test_cost_manager_config_refuses_it_when_built() -> None:
    """CostManagerConfig(configs=...) raises the ConfigError at once, chained to cattrs'."""
    bad = [{"config_id": "cfg", "api_id": "calc", "handling_config": "not an object"}]
    with pytest.raises(ConfigError, match=r"handling_config: expected an object, got str") as info:
        CostManagerConfig(configs=bad)
    assert info.value.__cause__ is not None
