"""The collector's signing key and its ``triggered_limits`` tokens (layer 6).

The service signs the usage limits it reports as an RS256 JWT (issuer ``aicm-api``) and
sends the public key beside it; SDKs verify the token, and may pin the key. The collector
does the same with an RSA key it generates on first start and keeps in its data
directory (``signing_key.pem``, readable by its owner only; ``public_key.pem`` beside it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["ISSUER", "PAYLOAD_VERSION", "SigningKey"]

#: The ``iss`` claim the service's SDK checks.
ISSUER = "aicm-api"
#: The ``version`` of the ``triggered_limits`` envelope.
PAYLOAD_VERSION = "v1"
_PRIVATE_NAME = "signing_key.pem"
_PUBLIC_NAME = "public_key.pem"


class SigningKey:
    """An RSA key kept in ``directory``: made on first use, read back afterwards.

    With ``directory`` None the key lives in memory only (the forged answers of the
    ``forge_limits`` fault).
    """

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = None if directory is None else Path(directory)
        self._lock = threading.Lock()
        self._private: rsa.RSAPrivateKey | None = None
        self._public_pem = ""
        self._key_id = ""
        # The last token per (api key id, events): answers repeat far more often than they
        # change, and an RSA signature costs about a millisecond.
        self._tokens: dict[tuple[str, str], dict[str, str]] = {}

    @property
    def private_path(self) -> Path:
        """Where the private key is kept (owner-only permissions)."""
        if self.directory is None:
            raise ValueError("this signing key is kept in memory only")
        return self.directory / _PRIVATE_NAME

    @property
    def public_path(self) -> Path:
        """Where the public key is written, for SDKs that pin it."""
        if self.directory is None:
            raise ValueError("this signing key is kept in memory only")
        return self.directory / _PUBLIC_NAME

    def _load(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._private is not None:
                return self._private
            if self.directory is None:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                return self._remember(key)
            path = self.private_path
            if path.exists():
                loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
                if not isinstance(loaded, rsa.RSAPrivateKey):
                    raise ValueError(f"{path} does not hold an RSA private key")
                key = loaded
            else:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                self.directory.mkdir(parents=True, exist_ok=True)
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                _write_private(path, pem)
            key = self._remember(key)
            public = self._public_pem.encode("ascii")
            if not self.public_path.exists() or self.public_path.read_bytes() != public:
                self.public_path.write_bytes(public)
            return key

    def _remember(self, key: rsa.RSAPrivateKey) -> rsa.RSAPrivateKey:
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._public_pem = public.decode("ascii")
        self._key_id = hashlib.sha256(public).hexdigest()[:16]
        self._private = key
        return key

    @property
    def public_pem(self) -> str:
        """The public key, PEM (SubjectPublicKeyInfo): what an SDK pins."""
        self._load()
        return self._public_pem

    @property
    def key_id(self) -> str:
        """A short id of the key: the start of the SHA-256 of its public PEM."""
        self._load()
        return self._key_id

    def triggered_limits(
        self, api_key_id: str, events: Sequence[Mapping[str, Any]]
    ) -> dict[str, str]:
        """The ``triggered_limits`` envelope for ``events``: ``{version, key_id, public_key,
        encrypted_payload}``, the payload an RS256 JWT whose claims hold the events."""
        key = self._load()
        cache_key = (api_key_id, repr([sorted(e.items()) for e in events]))
        with self._lock:
            cached = self._tokens.get(cache_key)
        if cached is not None:
            return cached
        claims = {"iss": ISSUER, "iat": int(time.time()), "triggered_limits": list(events)}
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": self._key_id})
        envelope = {
            "version": PAYLOAD_VERSION,
            "key_id": self._key_id,
            "public_key": self._public_pem,
            "encrypted_payload": token,
        }
        with self._lock:
            if len(self._tokens) > 1024:
                self._tokens.clear()
            self._tokens[cache_key] = envelope
        return envelope


def _write_private(path: Path, pem: bytes) -> None:
    """Write the private key readable by its owner only, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
