"""``CostManagerConfig``: an api_id's handling configs, from the service or a file (layer 4)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._core.exceptions import ConfigError, HandlingConfigError
from .._core.handling import HandlingConfig
from .._core.models import ServiceConfig, structure_config
from .._io.http import AsyncCostManagerClient

__all__ = ["CostManagerConfig", "handling_config_of", "load_service_configs"]

logger = logging.getLogger("aicm.configs")


def _structure(item: ServiceConfig | Mapping[str, Any], where: str) -> ServiceConfig:
    if isinstance(item, ServiceConfig):
        return item
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: a config must be an object, got {type(item).__name__}")
    config_id = item.get("config_id")
    named = f" {config_id!r}" if isinstance(config_id, str) else ""
    return structure_config(dict(item), ServiceConfig, where=f"{where}: malformed config{named}")


def load_service_configs(source: Any) -> list[ServiceConfig]:
    """Read configs from a JSON file path, a ``{"service_configs": [...]}`` mapping or a list."""
    where = "configs"
    data: Any = source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the configs file: {exc}", path=where) from exc
        except ValueError as exc:
            raise ConfigError(f"not valid JSON: {exc}", path=where) from exc
    if isinstance(data, Mapping):
        data = data.get("service_configs")
        if data is None:
            raise ConfigError(f"{where}: expected a list or a 'service_configs' list")
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ConfigError(f"{where}: expected a list of configs")
    return [_structure(item, f"{where}[{i}]") for i, item in enumerate(data)]


def handling_config_of(config: ServiceConfig) -> HandlingConfig | None:
    """The parsed handling config of ``config``; None for a manual-usage config (none, or ``{}``).

    Raises [`HandlingConfigError`][aicm.HandlingConfigError] naming the config and the field when it
    is malformed.
    """
    raw = config.handling_config
    if raw is None or (isinstance(raw, Mapping) and not raw):
        return None
    return HandlingConfig.from_mapping(raw, config_id=config.config_id)


class CostManagerConfig:
    """The configs for an ``api_id``: fetched from ``GET /configs`` (ETag-revalidated) or,
    offline, taken from ``configs`` (a JSON file path, a list, or the service's answer).

    Offline configs are checked when given: a malformed handling config raises
    [`HandlingConfigError`][aicm.HandlingConfigError] naming the config and the field, at once. A
    malformed one from the service is skipped and logged instead, so one bad config on the server
    never stops the others, nor the application.
    """

    def __init__(
        self,
        client: AsyncCostManagerClient | None = None,
        *,
        configs: Any = None,
    ) -> None:
        if client is None and configs is None:
            raise TypeError("give a service client, or local configs for offline use")
        self._client = client
        self._local = None if configs is None else load_service_configs(configs)
        for config in self._local or ():
            handling_config_of(config)

    @property
    def offline(self) -> bool:
        """True when configs come from local data, not the service."""
        return self._local is not None

    async def get_config(self, api_id: str) -> list[ServiceConfig]:
        """The configs of ``api_id`` that have a usable handling config.

        Manual-usage configs (no handling config) are left out. Raises what the service
        client raises ([`TransportError`][aicm.TransportError],
        [`APIStatusError`][aicm.APIStatusError]...) when the service cannot answer.
        """
        if self._local is not None:
            return [
                c for c in self._local if c.api_id == api_id and handling_config_of(c) is not None
            ]
        assert self._client is not None
        answer = await self._client.get_configs(api_id)
        usable = []
        for config in answer.service_configs:
            if config.api_id != api_id:
                continue
            try:
                if handling_config_of(config) is None:
                    continue
            except HandlingConfigError as exc:
                logger.error("skipping a malformed config from the service: %s", exc)
                continue
            usable.append(config)
        return usable
