"""``CostManagerConfig``: an api_id's handling configs, from the service or a file (layer 4)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import cattrs

from .._core.exceptions import ConfigError, HandlingConfigError
from .._core.handling import HandlingConfig
from .._core.models import ServiceConfig, converter
from .._io.http import AsyncCostManagerClient

__all__ = ["CostManagerConfig", "load_service_configs"]


def _structure(item: ServiceConfig | Mapping[str, Any], where: str) -> ServiceConfig:
    if isinstance(item, ServiceConfig):
        return item
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: a config must be an object, got {type(item).__name__}")
    missing = [k for k in ("config_id", "api_id") if not isinstance(item.get(k), str)]
    if missing:
        raise ConfigError(f"{where}: a config needs string field(s) {', '.join(missing)}")
    try:
        return converter.structure(dict(item), ServiceConfig)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: malformed config {item.get('config_id')!r}: {exc}") from exc


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


class CostManagerConfig:
    """The configs for an ``api_id``: fetched from ``GET /configs`` (ETag-revalidated) or,
    offline, taken from ``configs`` (a JSON file path, a list, or the service's answer).

    Handling configs are checked when loaded: a malformed one raises
    :class:`HandlingConfigError` naming the config and the field.
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

    @property
    def offline(self) -> bool:
        """True when configs come from local data, not the service."""
        return self._local is not None

    async def get_config(self, api_id: str) -> list[ServiceConfig]:
        """The configs whose ``api_id`` is ``api_id``, each handling config validated."""
        if self._local is not None:
            found = [c for c in self._local if c.api_id == api_id]
        else:
            assert self._client is not None
            answer = await self._client.get_configs(api_id)
            found = [c for c in answer.service_configs if c.api_id == api_id]
        for config in found:
            if config.handling_config is not None:
                if not isinstance(config.handling_config, Mapping):
                    raise HandlingConfigError(
                        "must be an object", config_id=config.config_id, field="handling_config"
                    )
                HandlingConfig.from_mapping(config.handling_config, config_id=config.config_id)
        return found
