"""Which names a handling config may never read: credentials and transport options (layer 1, pure).

Configs come from the service, which is trusted with our key and with usage, never with the
user's other credentials. So a path never enters, and a delivered value never carries, a
credential-named attribute or key, nor a transport option (headers, auth, cookies...).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

__all__ = ["TRANSPORT_ARGUMENTS", "is_credential_name", "is_private_name", "refused_segment"]

TRANSPORT_ARGUMENTS: frozenset[str] = frozenset(
    {
        "auth",
        "cert",
        "cookies",
        "default_headers",
        "default_query",
        "extra_headers",
        "extra_query",
        "headers",
        "http_client",
        "proxies",
        "proxy",
        "verify",
    }
)
"""Call arguments that configure the transport, not the request's data: never read."""

# Words that make a name a credential wherever they stand (``client_secret``, ``X-Auth``).
_CREDENTIAL_WORDS = frozenset(
    {
        "apikey",
        "accesskey",
        "authorization",
        "bearer",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "jwt",
        "passphrase",
        "passwd",
        "password",
        "privatekey",
        "pwd",
        "secret",
        "secretkey",
        "secrets",
    }
)
# Two words that together name a key (``api_key``, ``x-api-key``, ``APIKey``); ``key``
# alone does not (``service_key``, ``client_customer_key`` are data).
_CREDENTIAL_PAIRS = frozenset(
    {
        ("access", "key"),
        ("api", "key"),
        ("auth", "header"),
        ("auth", "key"),
        ("encryption", "key"),
        ("private", "key"),
        ("session", "key"),
        ("signing", "key"),
        ("subscription", "key"),
    }
)
# ``token`` as the last word (``token``, ``access_token``, ``X-Amz-Security-Token``), never
# ``input_tokens``, ``max_tokens`` nor gemini's ``promptTokenCount``; any ``*_headers``
# mapping (``auth_headers``, ``custom_headers``) holds what ``headers`` holds.
_CREDENTIAL_LAST = frozenset({"token", "headers"})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# Transport options whose values hold credentials: also never sent as a key of a delivered
# mapping (a response echoing ``{"headers": {...}}``).
_CREDENTIAL_HOLDERS = frozenset(
    {"auth", "cookies", "default_headers", "extra_headers", "headers", "proxies", "proxy"}
)
_CREDENTIAL = 1
_TRANSPORT = 2
_VERDICTS: dict[str, int] = {}
_MAX_VERDICTS = 4096


def is_private_name(name: str) -> bool:
    """True when a config may not read ``name``: credential-named or a transport option.

    Names are split into words at ``_``, ``-``, ``.`` and case changes, so ``api_key``,
    ``X-Api-Key``, ``apiKey``, ``client_secret``, ``access_token``, ``Authorization``,
    ``Set-Cookie``, ``headers`` and ``verify`` are private; ``input_tokens``,
    ``max_tokens``, ``service_key`` and ``promptTokenCount`` are not (cached; pure).
    """
    verdict = _VERDICTS.get(name)
    if verdict is None:
        verdict = _verdict(name)
    return verdict != 0


def is_credential_name(name: str) -> bool:
    """True when a key named ``name`` holds a credential (``api_key``, ``Authorization``,
    ``headers``...): such keys are left out of every mapping a config delivers. Transport
    options that hold none (``verify``, ``cert``) are not (cached; pure)."""
    verdict = _VERDICTS.get(name)
    if verdict is None:
        verdict = _verdict(name)
    return verdict & _CREDENTIAL != 0


def _verdict(name: str) -> int:
    verdict = _judge(name)
    if len(_VERDICTS) >= _MAX_VERDICTS:
        _VERDICTS.clear()
    _VERDICTS[name] = verdict
    return verdict


def _judge(name: str) -> int:
    lower = name.lower()
    if lower in _CREDENTIAL_HOLDERS:
        return _CREDENTIAL | _TRANSPORT
    transport = _TRANSPORT if lower in TRANSPORT_ARGUMENTS else 0
    words = [w.lower() for w in _WORD.findall(name)]
    if words and (
        words[-1] in _CREDENTIAL_LAST
        or any(w in _CREDENTIAL_WORDS for w in words)
        or any(pair in _CREDENTIAL_PAIRS for pair in itertools.pairwise(words))
    ):
        return _CREDENTIAL | transport
    return transport


def refused_segment(steps: Iterable[tuple[str, int | None] | str]) -> str | None:
    """The first segment of a path that a config may not enter, or None (pure)."""
    for step in steps:
        segment = step if isinstance(step, str) else step[0]
        if is_private_name(segment):
            return segment
    return None
