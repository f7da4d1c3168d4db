"""Shared by the SDK idiom and stream tests: the documented configs, read from the docs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from tests.tracking_support import usage_records

DOCS = Path(__file__).resolve().parent.parent / "docs"
_JSON_BLOCK = re.compile(r"```json\n(.*?)```", re.DOTALL)


def doc_json_blocks(page: str) -> list[Any]:
    """Every ```json block of ``docs/<page>`` that parses (some show a record, not a config)."""
    blocks = []
    for text in _JSON_BLOCK.findall((DOCS / page).read_text(encoding="utf-8")):
        try:
            blocks.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return blocks


def doc_configs() -> dict[str, dict[str, Any]]:
    """The ``/configs`` entries docs/cost_manager.md shows, by config_id."""
    return {
        b["config_id"]: b
        for b in doc_json_blocks("cost_manager.md")
        if isinstance(b, dict) and "handling_config" in b
    }


def served(*config_ids: str, api_id: str) -> list[dict[str, Any]]:
    """The documented configs ``config_ids``, served for ``api_id``."""
    configs = doc_configs()
    return [{**copy.deepcopy(configs[c]), "api_id": api_id} for c in config_ids]


def openai_configs(api_id: str) -> list[dict[str, Any]]:
    """The documented OpenAI chat and Responses configs for ``api_id``."""
    return served("openai-chat", "openai-responses", api_id=api_id)


def anthropic_configs(api_id: str) -> list[dict[str, Any]]:
    """The documented Anthropic messages config for ``api_id``."""
    return served("anthropic-messages", api_id=api_id)


def one_record(collector: Any) -> dict[str, Any]:
    """The single ``/track-usage`` record the collector holds (fails when there are none or
    several, or when a built-in ``/track`` record was made beside it)."""
    records = usage_records(collector)
    assert len(records) == 1, records
    assert collector.records("track") == []
    return records[0]


def chat_tokens(record: dict[str, Any]) -> tuple[Any, Any, str]:
    """(prompt tokens, completion tokens, response id) of an OpenAI chat record."""
    usage = record.get("usage") or {}
    return usage.get("prompt_tokens"), usage.get("completion_tokens"), record["response_id"]


def responses_tokens(record: dict[str, Any]) -> tuple[Any, Any, str]:
    """(input tokens, output tokens, response id) of an OpenAI Responses record."""
    usage = record.get("usage") or {}
    return usage.get("input_tokens"), usage.get("output_tokens"), record["response_id"]


def claude_tokens(record: dict[str, Any]) -> tuple[Any, Any, str]:
    """(input tokens, output tokens, response id) of an Anthropic record."""
    return record.get("input_tokens"), record.get("output_tokens"), record["response_id"]
