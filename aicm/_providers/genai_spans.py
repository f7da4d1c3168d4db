"""A span that follows the OpenTelemetry GenAI semantic conventions, read as the ``/track``
record the built-in of its vendor would make of the same call (pure; no OpenTelemetry import).

The vendor is ``gen_ai.provider.name`` (or the older ``gen_ai.system``) in the service's
naming; the model ``gen_ai.response.model`` (else ``gen_ai.request.model``); the id
``gen_ai.response.id``; the usage the vendor's own usage object rebuilt from
``gen_ai.usage.*`` by `normalize.vendor_usage`, so a span and a
wrapped client of the same call send the same payload shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._core.exceptions import RecordError
from .llm_usage import LlmTrack
from .normalize import vendor_usage

__all__ = ["GENAI_KEYS", "SpanAttributeError", "genai_track"]

PROVIDER = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"
#: A span carrying one of these is a GenAI span; any other span is not looked at.
GENAI_KEYS = (PROVIDER, SYSTEM)

# Each count under its current name first, then the names older instrumentations use.
_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
_CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
_CACHE_WRITE = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
)

#: GenAI provider names (current and older) as the service names the vendor.
VENDORS: Mapping[str, str] = {
    "openai": "openai",
    "azure.ai.openai": "openai",
    "az.ai.openai": "openai",
    "anthropic": "anthropic",
    "aws.bedrock": "amazon-bedrock",
    "aws_bedrock": "amazon-bedrock",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "x_ai": "xai",
    "xai": "xai",
    "groq": "groq",
    "deepseek": "deepseek",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "together_ai": "together",
    "together": "together",
    "fireworks": "fireworks-ai",
}


class SpanAttributeError(RecordError):
    """A GenAI span's attributes cannot make a record (a count that is not a count...)."""


def _text(attributes: Mapping[str, Any], key: str) -> str | None:
    value = attributes.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SpanAttributeError(
            f"must be a non-empty string, got {type(value).__name__}", field=key
        )
    return value


def _count(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = attributes.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SpanAttributeError(f"must be a count (an int >= 0), got {value!r}", field=key)
        return value
    return None


def vendor_name(provider: str) -> str:
    """The service's name of a GenAI provider (``aws.bedrock`` -> ``amazon-bedrock``); a
    provider it does not know keeps its own name."""
    return VENDORS.get(provider.lower(), provider)


def genai_track(attributes: Mapping[str, Any]) -> LlmTrack | None:
    """What to record for a span with these attributes, or None when it is not a GenAI
    call or reports no token usage (a failed call: nothing to bill).

    Raises `SpanAttributeError` for attributes no record can be made of.
    """
    provider = _text(attributes, PROVIDER) or _text(attributes, SYSTEM)
    if provider is None:
        return None
    input_tokens = _count(attributes, _INPUT)
    output_tokens = _count(attributes, _OUTPUT)
    if input_tokens is None and output_tokens is None:
        return None
    model = _text(attributes, "gen_ai.response.model") or _text(attributes, "gen_ai.request.model")
    if model is None:
        raise SpanAttributeError(
            "a GenAI span with usage names no model", field="gen_ai.response.model"
        )
    vendor = vendor_name(provider)
    usage = vendor_usage(
        vendor,
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens,
        cache_read_tokens=_count(attributes, _CACHE_READ) or 0,
        cache_write_tokens=_count(attributes, _CACHE_WRITE) or 0,
    )
    return LlmTrack(
        api_id=vendor,
        service_key=model,
        usage=usage,
        response_id=_text(attributes, "gen_ai.response.id"),
    )
