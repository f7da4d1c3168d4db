"""GenAI span attributes read as the built-ins' records (pure): the vendor's own usage shape,
which the one usage normalisation reads back to the span's counts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aicm._providers.genai_spans import SpanAttributeError, genai_track
from aicm._providers.normalize import normalize_usage, vendor_usage
from tests.fakes import FakeAnthropic, FakeBedrock

# What each vendor's API reports, as the built-ins record it (plain, snake_case for the
# pydantic SDKs), with cached input.
NATIVE: dict[str, dict[str, Any]] = {
    "openai": {
        "prompt_tokens": 120,
        "completion_tokens": 20,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 30, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
    "anthropic": {
        **FakeAnthropic(input_tokens=80, cache_read_input_tokens=30)._usage(20),
        "cache_creation_input_tokens": 10,
    },
    "amazon-bedrock": {**FakeBedrock().usage(), "cacheWriteInputTokens": 10},
    "google": {
        "prompt_token_count": 120,
        "candidates_token_count": 20,
        "total_token_count": 140,
        "cached_content_token_count": 30,
    },
}


@pytest.mark.parametrize("vendor", sorted(NATIVE))
def test_the_rebuilt_usage_is_the_vendors_shape_and_prices_the_same(vendor: str) -> None:
    native = NATIVE[vendor]
    counts = normalize_usage(vendor, native)
    rebuilt = vendor_usage(
        vendor,
        input_tokens=counts["input_tokens"],
        output_tokens=counts["output_tokens"],
        cache_read_tokens=counts.get("cache_read_tokens", 0),
        cache_write_tokens=counts.get("cache_write_tokens", 0),
    )
    assert normalize_usage(vendor, rebuilt) == counts
    assert set(rebuilt) <= set(native)  # no field the vendor's own answer lacks


@given(
    vendor=st.sampled_from([*NATIVE, "groq", "ibm.watsonx.ai"]),
    inputs=st.integers(0, 10**9),
    output=st.integers(0, 10**9),
    read=st.integers(0, 10**6),
    write=st.integers(0, 10**6),
)
def test_normalising_the_rebuilt_usage_gives_back_the_counts(
    vendor: str, inputs: int, output: int, read: int, write: int
) -> None:
    inputs += read + write  # the semantic conventions count cached input in input_tokens
    if vendor == "google":
        write = 0  # Gemini reports no cache writes
    rebuilt = vendor_usage(
        vendor,
        input_tokens=inputs,
        output_tokens=output,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )
    expected = {
        "input_tokens": inputs,
        "output_tokens": output,
        "cache_read_tokens": read,
        "cache_write_tokens": write,
    }
    assert normalize_usage(vendor, rebuilt) == {
        k: v for k, v in expected.items() if v or k in ("input_tokens", "output_tokens")
    }


@pytest.mark.parametrize(
    ("provider", "vendor"),
    [
        ("openai", "openai"),
        ("azure.ai.openai", "openai"),
        ("aws.bedrock", "amazon-bedrock"),
        ("gcp.vertex_ai", "google"),
        ("gcp.gemini", "google"),
        ("x_ai", "xai"),
        ("mistral_ai", "mistral"),
        ("some.new.vendor", "some.new.vendor"),
    ],
)
def test_provider_names_are_the_services_vendor_names(provider: str, vendor: str) -> None:
    track = genai_track(
        {
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": "asked",
            "gen_ai.response.model": "answered",
            "gen_ai.usage.input_tokens": 3,
            "gen_ai.usage.output_tokens": 2,
        }
    )
    assert track is not None
    assert (track.api_id, track.service_key, track.response_id) == (vendor, "answered", None)


def test_spans_without_usage_or_provider_make_no_record() -> None:
    assert genai_track({"http.method": "GET"}) is None
    assert genai_track({"gen_ai.system": "openai", "gen_ai.request.model": "m"}) is None


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"gen_ai.usage.input_tokens": 1.5}, "gen_ai.usage.input_tokens"),
        ({"gen_ai.usage.output_tokens": True}, "gen_ai.usage.output_tokens"),
        ({"gen_ai.usage.input_tokens": 1}, "gen_ai.response.model"),
        ({"gen_ai.provider.name": 7}, "gen_ai.provider.name"),
        (
            {"gen_ai.usage.input_tokens": 1, "gen_ai.request.model": "m", "gen_ai.response.id": ""},
            "gen_ai.response.id",
        ),
    ],
)
def test_bad_attributes_name_the_attribute(attributes: dict[str, Any], field: str) -> None:
    with pytest.raises(SpanAttributeError) as caught:
        genai_track({"gen_ai.system": "openai", **attributes})
    assert caught.value.field == field
