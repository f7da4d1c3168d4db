"""aicm: record how much of an AI or REST API your application used, and deliver it."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._core.exceptions import (
    AicmError,
    APIStatusError,
    AuthenticationError,
    ClientRequestError,
    ClosedError,
    ConfigError,
    DeliveryError,
    FlushTimeoutError,
    HandlingConfigError,
    InvalidKeyError,
    InvalidTimestampError,
    MissingApiKeyError,
    NonFiniteNumberError,
    NotFoundError,
    NotSerializableError,
    QueueFullError,
    QueueStoreError,
    RateLimitedError,
    RecordError,
    RecordTooLargeError,
    SchemaError,
    ServerError,
    ServiceRedirectError,
    TransportError,
    UnexpectedAnswerError,
    UnknownConfigError,
    UsageLimitExceeded,
    UsageValidationError,
)
from ._version import __version__

if TYPE_CHECKING:
    from ._api.configs import CostManagerConfig
    from ._api.conveniences import SaltedHash
    from ._api.cost_manager import AsyncCostManager
    from ._api.rest import AsyncRestUsageWrapper
    from ._api.tracker import AsyncTracker
    from ._core.extractor import UniversalExtractor
    from ._core.limits import TriggeredLimit
    from ._core.models import RecordResult, ServiceConfig, TrackRecord, TrackResult, UsageRecord
    from ._core.service_models import (
        CostEvent,
        CostEventRecord,
        CustomCostUnit,
        Customer,
        CustomService,
        CustomServiceSummary,
        Page,
        Service,
        UsageEvent,
        UsageLimit,
        UsageLimitProgress,
        UsageRollup,
        Vendor,
        Webhook,
        WebhookList,
    )
    from ._core.settings import DeliveryType, OnFull, Settings, TrackFormat, resolve_settings
    from ._core.validator import TypeValidator
    from ._delivery.health import DeliveryHealth, get_global_delivery_health
    from ._delivery.store import DeadLetterRecord
    from ._io.http import AsyncCostManagerClient
    from ._sync.client import CostManagerClient
    from ._sync.cost_manager import CostManager
    from ._sync.rest import RestUsageWrapper
    from ._sync.tracker import Tracker

__all__ = [
    "APIStatusError",
    "AicmError",
    "AsyncCostManager",
    "AsyncCostManagerClient",
    "AsyncRestUsageWrapper",
    "AsyncTracker",
    "AuthenticationError",
    "ClientRequestError",
    "ClosedError",
    "ConfigError",
    "CostEvent",
    "CostEventRecord",
    "CostManager",
    "CostManagerClient",
    "CostManagerConfig",
    "CustomCostUnit",
    "CustomService",
    "CustomServiceSummary",
    "Customer",
    "DeadLetterRecord",
    "DeliveryError",
    "DeliveryHealth",
    "DeliveryType",
    "FlushTimeoutError",
    "HandlingConfigError",
    "InvalidKeyError",
    "InvalidTimestampError",
    "MissingApiKeyError",
    "NonFiniteNumberError",
    "NotFoundError",
    "NotSerializableError",
    "OnFull",
    "Page",
    "QueueFullError",
    "QueueStoreError",
    "RateLimitedError",
    "RecordError",
    "RecordResult",
    "RecordTooLargeError",
    "RestUsageWrapper",
    "SaltedHash",
    "SchemaError",
    "ServerError",
    "Service",
    "ServiceConfig",
    "ServiceRedirectError",
    "Settings",
    "TrackFormat",
    "TrackRecord",
    "TrackResult",
    "Tracker",
    "TransportError",
    "TriggeredLimit",
    "TypeValidator",
    "UnexpectedAnswerError",
    "UniversalExtractor",
    "UnknownConfigError",
    "UsageEvent",
    "UsageLimit",
    "UsageLimitExceeded",
    "UsageLimitProgress",
    "UsageRecord",
    "UsageRollup",
    "UsageValidationError",
    "Vendor",
    "Webhook",
    "WebhookList",
    "__version__",
    "get_global_delivery_health",
    "resolve_settings",
]

# The public names outside the exceptions tree, by the module that defines them. Each module
# is imported when a program first asks for one of its names (PEP 562), so ``import aicm``
# costs only the exceptions: a program that tracks never loads the management API's models,
# the SQLite queue or the proxies unless it uses them. The imports under ``TYPE_CHECKING``
# above name the same objects for type checkers (a test keeps the two lists equal).
_LAZY: dict[str, str] = {
    "AsyncCostManager": "_api.cost_manager",
    "AsyncCostManagerClient": "_io.http",
    "AsyncRestUsageWrapper": "_api.rest",
    "AsyncTracker": "_api.tracker",
    "CostEvent": "_core.service_models",
    "CostEventRecord": "_core.service_models",
    "CostManager": "_sync.cost_manager",
    "CostManagerClient": "_sync.client",
    "CostManagerConfig": "_api.configs",
    "CustomCostUnit": "_core.service_models",
    "CustomService": "_core.service_models",
    "CustomServiceSummary": "_core.service_models",
    "Customer": "_core.service_models",
    "DeadLetterRecord": "_delivery.store",
    "DeliveryHealth": "_delivery.health",
    "DeliveryType": "_core.settings",
    "OnFull": "_core.settings",
    "Page": "_core.service_models",
    "RecordResult": "_core.models",
    "RestUsageWrapper": "_sync.rest",
    "SaltedHash": "_api.conveniences",
    "Service": "_core.service_models",
    "ServiceConfig": "_core.models",
    "Settings": "_core.settings",
    "TrackFormat": "_core.settings",
    "TrackRecord": "_core.models",
    "TrackResult": "_core.models",
    "Tracker": "_sync.tracker",
    "TriggeredLimit": "_core.limits",
    "TypeValidator": "_core.validator",
    "UniversalExtractor": "_core.extractor",
    "UsageEvent": "_core.service_models",
    "UsageLimit": "_core.service_models",
    "UsageLimitProgress": "_core.service_models",
    "UsageRecord": "_core.models",
    "UsageRollup": "_core.service_models",
    "Vendor": "_core.service_models",
    "Webhook": "_core.service_models",
    "WebhookList": "_core.service_models",
    "get_global_delivery_health": "_delivery.health",
    "resolve_settings": "_core.settings",
}

if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all attribute

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # the next lookup is an ordinary attribute
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


logging.getLogger("aicm").addHandler(logging.NullHandler())
