"""Signed ``triggered_limits`` answers and a small service that answers them (test helpers)."""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes._serve import FakeService

__all__ = ["KeyPair", "LimitsService", "fresh_key", "keypair", "limit", "signed"]


class KeyPair:
    """An RSA key pair in PEM, as a service signing its limits holds it."""

    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.public_pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


@functools.lru_cache(maxsize=4)
def keypair(name: str = "service") -> KeyPair:
    """One key pair per name for the test session (generating one takes ~50 ms)."""
    return KeyPair()


def fresh_key() -> str:
    """An API key of the service's form ``prefix.key-id``, new for each test, so that no two
    tests share the process's limits for a key."""
    return f"sk-test.{uuid.uuid4().hex}"


def key_id(api_key: str) -> str:
    """The part of an API key a limit names."""
    return api_key.rsplit(".", 1)[1]


def limit(api_key: str, **fields: Any) -> dict[str, Any]:
    """One triggered limit as the service's claims list it (a hard daily limit by default)."""
    item: dict[str, Any] = {
        "event_id": f"evt-{uuid.uuid4().hex[:8]}",
        "limit_id": "lim-daily",
        "threshold_type": "limit",
        "amount": 1.0,
        "period": "day",
        "limit_context": None,
        "limit_message": "Daily budget of $1 reached",
        "service_key": None,
        "customer_key": None,
        "api_key_id": key_id(api_key),
        "triggered_at": "2026-01-01T00:00:00Z",
        "expires_at": None,
    }
    item.update(fields)
    return item


def signed(
    limits: list[dict[str, Any]],
    *,
    signer: KeyPair | None = None,
    public: KeyPair | None = None,
    issuer: str = "aicm-api",
    iat: float | None = None,
) -> dict[str, Any]:
    """A ``triggered_limits`` answer: the claims signed by ``signer``, carrying ``public``'s
    public key (both the service's pair unless told)."""
    signer = signer or keypair()
    public = public or signer
    claims = {
        "iss": issuer,
        "iat": int(time.time() if iat is None else iat),
        "triggered_limits": limits,
    }
    return {
        "version": "v1",
        "key_id": "test-key",
        "public_key": public.public_pem,
        "encrypted_payload": jwt.encode(claims, signer.private_pem, algorithm="RS256"),
    }


class LimitsService(FakeService):
    """The service's ingest, configs and ``/triggered-limits``, answering ``self.answer``.

    ``records`` holds what was tracked; ``answer`` (a ``triggered_limits`` object, or
    None for none) rides on every answer; ``configs`` are served at ``/configs``.
    """

    def __init__(self) -> None:
        self.answer: dict[str, Any] | None = None
        self.configs: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.limit_requests = 0
        super().__init__()

    @property
    def api_base(self) -> str:
        """What to pass as ``aicm_api_base``."""
        return self.url

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/track", self._ingest, methods=["POST"]),
                Route("/api/v1/track-usage", self._ingest, methods=["POST"]),
                Route("/api/v1/configs", self._configs, methods=["GET"]),
                Route("/api/v1/triggered-limits", self._limits, methods=["GET"]),
            ]
        )

    def _with_limits(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.answer is not None:
            body["triggered_limits"] = self.answer
        return body

    async def _ingest(self, request: Request) -> Response:
        body = await request.json()
        batch = body.get("tracked") or body.get("usage_records") or []
        self.records.extend(batch)
        results = [{"response_id": r.get("response_id"), "status": "queued"} for r in batch]
        return JSONResponse(self._with_limits({"results": results}), status_code=202)

    async def _configs(self, request: Request) -> Response:
        return JSONResponse(self._with_limits({"service_configs": self.configs}))

    async def _limits(self, request: Request) -> Response:
        self.limit_requests += 1
        return JSONResponse({"triggered_limits": self.answer or {}})
