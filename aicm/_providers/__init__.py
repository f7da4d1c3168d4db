"""Built-in tracking of well-known AI providers: usage recorded with no handling config.

`builtin_for()` recognises a client by its package and class (never by its lower-cased
class name, which is generic for some SDKs) and returns the `Builtin` that reads its
calls; `builtin_for_vendor()` returns the one that reads a vendor's answers (for
``track_llm_usage``). `track_record()` turns a `Usage` into the service's
``/track`` record. Each provider's module documents which calls it reads.
"""

from __future__ import annotations

from typing import Any

from .._core.limits import vendor_of as api_vendor
from .._core.models import TrackRecord
from ._base import Builtin, Usage, plain_usage
from .anthropic import ANTHROPIC
from .bedrock import BEDROCK, STREAM_KEY
from .gemini import GEMINI
from .openai import COMPATIBLE_HOSTS, OPENAI, openai_vendor

__all__ = [
    "ANTHROPIC",
    "BEDROCK",
    "BUILTINS",
    "GEMINI",
    "OPENAI",
    "STREAM_KEY",
    "Builtin",
    "Usage",
    "builtin_for",
    "builtin_for_vendor",
    "plain_usage",
    "track_record",
    "vendor_of",
]

BUILTINS: tuple[Builtin, ...] = (OPENAI, ANTHROPIC, GEMINI, BEDROCK)

_OPENAI_CLASSES = frozenset({"OpenAI", "AsyncOpenAI", "AzureOpenAI", "AsyncAzureOpenAI"})
_ANTHROPIC_CLASSES = frozenset({"Anthropic", "AsyncAnthropic"})


def builtin_for(client: Any) -> Builtin | None:
    """The built-in that tracks ``client``'s calls, or None for a client it does not know."""
    cls = type(client)
    package = cls.__module__.partition(".")[0]
    name = cls.__name__
    if package == "openai" and name in _OPENAI_CLASSES:
        vendor = openai_vendor(getattr(client, "base_url", ""))
        return OPENAI if vendor == OPENAI.vendor else OPENAI.with_vendor(vendor)
    if package == "anthropic" and name in _ANTHROPIC_CLASSES:
        return ANTHROPIC
    if cls.__module__.startswith("google.genai") and name == "Client":
        return GEMINI
    if package == "botocore":
        meta = getattr(client, "meta", None)
        service = getattr(getattr(meta, "service_model", None), "service_name", None)
        if service == "bedrock-runtime":
            return BEDROCK
    return None


def vendor_of(service_key: str) -> str:
    """The vendor a ``service_key`` names: ``"openai::gpt-4o"`` or an ``api_id`` (``"gemini"``)."""
    head = service_key.partition("::")[0]
    vendor = api_vendor(head)
    return head if vendor == head.lower() else vendor  # a vendor's own name, as given


def builtin_for_vendor(vendor: str) -> Builtin | None:
    """The built-in that reads ``vendor``'s answers (OpenAI's for OpenAI-compatible vendors)."""
    for builtin in BUILTINS:
        if builtin.vendor == vendor:
            return builtin
    if vendor in {v for _, v in COMPATIBLE_HOSTS}:
        return OPENAI.with_vendor(vendor)
    return None


def track_record(
    usage: Usage,
    *,
    client_customer_key: str | None,
    context: Any,
    max_bytes: int,
    legacy: bool,
) -> TrackRecord:
    """The ``/track`` record of ``usage``: ``service_key`` ``"vendor::model"``, the provider's
    response id (a fresh one when it gave none) and its usage as the payload."""
    return TrackRecord.build(
        usage.vendor,
        usage.model,
        usage.payload,
        response_id=usage.response_id,
        client_customer_key=client_customer_key,
        context=context,
        max_bytes=max_bytes,
        legacy=legacy,
    )
