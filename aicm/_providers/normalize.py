"""One vocabulary for every vendor's usage: the token counts ``genai-prices`` prices by (pure).

`normalize_usage()` maps a recorded usage object onto:

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

__all__ = ["PRICE_PROVIDERS", "normalize_usage", "vendor_usage"]

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
        "cache_write_tokens": _int(usage, "prompt_tokens_details", "cache_write_tokens"),
        "input_audio_tokens": _int(usage, "prompt_tokens_details", "audio_tokens"),
        "output_audio_tokens": _int(usage, "completion_tokens_details", "audio_tokens"),
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


#: Vendors that report cached input apart from ``input_tokens``: their (input, output,
#: cache read, cache write) field names.
_CACHE_APART: Mapping[str, tuple[str, str, str, str]] = {
    "anthropic": (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ),
    "amazon-bedrock": (
        "inputTokens",
        "outputTokens",
        "cacheReadInputTokens",
        "cacheWriteInputTokens",
    ),
}


def _cache_apart(usage: Mapping[str, Any], vendor: str) -> dict[str, int]:
    inputs, outputs, reads, writes = _CACHE_APART[vendor]
    read = _int(usage, reads)
    write = _int(usage, writes)
    return {
        "input_tokens": _int(usage, inputs) + read + write,
        "output_tokens": _int(usage, outputs),
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
        counts = _cache_apart(usage, "amazon-bedrock")
    elif vendor == "anthropic" or _has(
        usage, "cache_creation_input_tokens", "cache_read_input_tokens"
    ):
        counts = _cache_apart(usage, "anthropic")
    elif _has(usage, "input_tokens", "output_tokens"):
        counts = _openai_responses(usage)
    else:
        return {}
    return {k: v for k, v in counts.items() if v or k in ("input_tokens", "output_tokens")}


def vendor_usage(
    vendor: str,
    *,
    input_tokens: int,
    output_tokens: int | None = None,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> dict[str, Any]:
    """The usage object ``vendor``'s API reports for these counts (the inverse of
    `normalize_usage`): ``input_tokens`` is all input, cached included.

    Anthropic's and Bedrock's shapes carry cached input apart; Google's is Gemini's
    ``usage_metadata``; any other vendor gets OpenAI's chat shape (``output_tokens`` None,
    as for embeddings: no ``completion_tokens``).
    """
    output = output_tokens or 0
    names = _CACHE_APART.get(vendor)
    if names is not None:
        inputs, outputs, reads, writes = names
        usage: dict[str, Any] = {
            inputs: max(0, input_tokens - cache_read_tokens - cache_write_tokens),
            outputs: output,
        }
        if vendor == "amazon-bedrock":
            usage["totalTokens"] = input_tokens + output
        if cache_read_tokens:
            usage[reads] = cache_read_tokens
        if cache_write_tokens:
            usage[writes] = cache_write_tokens
        return usage
    if vendor == "google":
        usage = {
            "prompt_token_count": input_tokens,
            "candidates_token_count": output,
            "total_token_count": input_tokens + output,
        }
        if cache_read_tokens:
            usage["cached_content_token_count"] = cache_read_tokens
        return usage
    usage = {"prompt_tokens": input_tokens}
    if output_tokens is not None:
        usage["completion_tokens"] = output
    usage["total_tokens"] = input_tokens + output
    details = {
        name: count
        for name, count in (
            ("cached_tokens", cache_read_tokens),
            ("cache_write_tokens", cache_write_tokens),
        )
        if count
    }
    if details:
        usage["prompt_tokens_details"] = details
    return usage
