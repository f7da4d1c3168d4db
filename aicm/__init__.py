"""aicm: record how much of an AI or REST API your application used, and deliver it."""

from __future__ import annotations

import logging

from ._api.configs import CostManagerConfig
from ._api.cost_manager import AsyncCostManager
from ._api.rest import AsyncRestUsageWrapper
from ._api.tracker import AsyncTracker
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
    UnknownConfigError,
    UsageValidationError,
)
from ._core.extractor import UniversalExtractor
from ._core.models import RecordResult, ServiceConfig, TrackRecord, TrackResult, UsageRecord
from ._core.settings import DeliveryType, OnFull, Settings, TrackFormat, resolve_settings
from ._core.validator import TypeValidator
from ._delivery.engine import DeadLetterRecord
from ._delivery.health import DeliveryHealth, get_global_delivery_health
from ._io.http import AsyncCostManagerClient
from ._sync.client import CostManagerClient
from ._sync.cost_manager import CostManager
from ._sync.rest import RestUsageWrapper
from ._sync.tracker import Tracker
from ._version import __version__

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
    "CostManager",
    "CostManagerClient",
    "CostManagerConfig",
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
    "NotSerializableError",
    "OnFull",
    "QueueFullError",
    "QueueStoreError",
    "RateLimitedError",
    "RecordError",
    "RecordResult",
    "RecordTooLargeError",
    "RestUsageWrapper",
    "SchemaError",
    "ServerError",
    "ServiceConfig",
    "ServiceRedirectError",
    "Settings",
    "TrackFormat",
    "TrackRecord",
    "TrackResult",
    "Tracker",
    "TransportError",
    "TypeValidator",
    "UniversalExtractor",
    "UnknownConfigError",
    "UsageRecord",
    "UsageValidationError",
    "__version__",
    "get_global_delivery_health",
    "resolve_settings",
]

logging.getLogger("aicm").addHandler(logging.NullHandler())
