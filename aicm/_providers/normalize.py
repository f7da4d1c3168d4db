"""One vocabulary for every vendor's usage: the token counts ``genai-prices`` prices by (pure).

:func:`normalize_usage` maps a recorded usage object onto:

``input_tokens``
    all input, cache reads and writes included (Anthropic and Bedrock report cached input
    apart from ``input_tokens``, so the parts are added);
``output_tokens``
    all output, reasoning (thinking) tokens included;
``cache_read_tokens`` / ``cache_write_tokens``
    the cached part of the input, read or written;
``input_audio_tokens`` / ``output_audio_tokens``
    audio, where the vendor reports it.

The shape is recognised by its fields, so OpenAI-compatible vendors (Fireworks, xAI, Groq...)
and handling-config records that already use this vocabulary need nothing of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PRICE_PROVIDERS", "normalize_usage"]

#: ``genai-prices`` provider ids of the vendors ``/track`` records name.
PRICE_PROVIDERS: Mapping[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "google",
    "amazon-bedrock": "aws",
    "fireworks-ai": "fireworks",
    "xai": "x-ai",
    "groq": "groq",
    "together": "together",
    "deepseek": "deepseek",
    "mistral": "mistral",
}


def _int(usage: Mapping[str, Any], *path: str) -> int:
    value: Any = usage
    for step in path:
        if not isinstance(value, Mapping):
            return 0
        value = value.get(step)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return 0
    return max(int(value), 0)


def _has(usage: Mapping[str, Any], *names: str) -> bool:
    return any(name in usage for name in names)


def _openai_chat(usage: Mapping[str, Any]) -> dict[str, int]:
    # prompt_tokens includes cached and audio input; completion_tokens includes reasoning.
    return {
        "input_tokens": _int(usage, "prompt_tokens"),
        "output_tokens": _int(usage, "completion_tokens"),
        "cache_read_tokens": _int(usage, "prompt_tokens_details", "cached_tokens"),
        "input_audio_tokens": _int(usage, "prompt_tokens_details", "audio_tokens"),
        "output_audio_tokens": _int(usage, "completion_tokens_details", "audio_tokens"),
    }


def _anthropic(usage: Mapping[str, Any]) -> dict[str, int]:
    read = _int(usage, "cache_read_input_tokens")
    write = _int(usage, "cache_creation_input_tokens")
    return {
        "input_tokens": _int(usage, "input_tokens") + read + write,
        "output_tokens": _int(usage, "output_tokens"),
        "cache_read_tokens": read,
        "cache_write_tokens": write,
    }


def _openai_responses(usage: Mapping[str, Any]) -> dict[str, int]:
    # The Responses API counts like chat: cached and reasoning tokens are inside the totals.
    return {
        "input_tokens": _int(usage, "input_tokens"),
        "output_tokens": _int(usage, "output_tokens"),
        "cache_read_tokens": _int(usage, "input_tokens_details", "cached_tokens")
        or _int(usage, "cache_read_tokens"),
        "cache_write_tokens": _int(usage, "cache_write_tokens"),
        "input_audio_tokens": _int(usage, "input_audio_tokens"),
        "output_audio_tokens": _int(usage, "output_audio_tokens"),
    }


def _gemini(usage: Mapping[str, Any]) -> dict[str, int]:
    snake = "prompt_token_count" in usage or "candidates_token_count" in usage

    def count(name: str, camel: str) -> int:
        return _int(usage, name if snake else camel)

    return {
        # prompt_token_count includes cached content; thoughts are billed as output.
        "input_tokens": count("prompt_token_count", "promptTokenCount")
        + count("tool_use_prompt_token_count", "toolUsePromptTokenCount"),
        "output_tokens": count("candidates_token_count", "candidatesTokenCount")
        + count("thoughts_token_count", "thoughtsTokenCount"),
        "cache_read_tokens": count("cached_content_token_count", "cachedContentTokenCount"),
    }


def _bedrock(usage: Mapping[str, Any]) -> dict[str, int]:
    read = _int(usage, "cacheReadInputTokens")
    write = _int(usage, "cacheWriteInputTokens")
    return {
        "input_tokens": _int(usage, "inputTokens") + read + write,
        "output_tokens": _int(usage, "outputTokens"),
        "cache_read_tokens": read,
        "cache_write_tokens": write,
    }


def normalize_usage(vendor: str | None, usage: Any) -> dict[str, int]:
    """``usage`` (a recorded payload) in ``genai-prices``' vocabulary; zero counts are left
    out but for ``input_tokens`` and ``output_tokens``.

    ``vendor`` (``"anthropic"``...) settles shapes that look alike; an empty result means the
    usage is not in any shape known here (a REST service's own units, say).
    """
    if not isinstance(usage, Mapping):
        return {}
    if _has(usage, "prompt_tokens", "completion_tokens"):
        counts = _openai_chat(usage)
    elif _has(usage, "prompt_token_count", "promptTokenCount", "candidates_token_count"):
        counts = _gemini(usage)
    elif _has(usage, "inputTokens", "outputTokens"):
        counts = _bedrock(usage)
    elif vendor == "anthropic" or _has(
        usage, "cache_creation_input_tokens", "cache_read_input_tokens"
    ):
        counts = _anthropic(usage)
    elif _has(usage, "input_tokens", "output_tokens"):
        counts = _openai_responses(usage)
    else:
        return {}
    return {k: v for k, v in counts.items() if v or k in ("input_tokens", "output_tokens")}
