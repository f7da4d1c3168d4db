"""aicm: record how much of an AI or REST API your application used, and deliver it."""

from __future__ import annotations

import logging

from ._api.configs import CostManagerConfig
from ._api.conveniences import SaltedHash
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

logging.getLogger("aicm").addHandler(logging.NullHandler())
