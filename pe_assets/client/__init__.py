"""HTTP client of the Genesys Cloud Predictive Engagement analytics API (read side).

A plain library (no Dagster): tokens with least-privilege scopes, a rate budget shared across
processes, tenacity retries, cursor pagination and payload checks. ``PredictiveEngagementClient``
speaks the seed contract; ``JourneyAggregatesClient`` the real Genesys journey endpoints (action
maps, journey aggregates sync and async). Both share ``ApiClientBase``'s machinery.
"""

from .api import (
    ANALYTICS_PAGE_SIZE,
    DEFAULT_REQUESTS_PER_MINUTE,
    LISTING_PAGE_SIZE,
    ClientStats,
    PredictiveEngagementClient,
)
from .auth import READ_SCOPES, OAuthCredentials, is_write_scope
from .base import ApiClientBase
from .budget import BudgetStore, PostgresBudgetStore, RateBudget, SqliteBudgetStore, budget_key
from .errors import (
    ApiConnectionError,
    ApiError,
    AsyncJobError,
    AuthenticationError,
    BudgetStoreError,
    ClientConfigError,
    NotFoundError,
    PaginationError,
    PayloadError,
    PermissionDeniedError,
    PredictiveEngagementError,
    QueryCancelledError,
    RateLimitedError,
    ResponseError,
    RetryAfterTooLong,
    ServerError,
)
from .journey_aggregates import (
    ACTION_MAPS_PERMISSION,
    AGGREGATES_PERMISSION,
    FUNNEL_METRICS,
    KNOWN_METRICS,
    MAX_QUERY_DAYS,
    REQUIRED_PERMISSIONS,
    AggregateChunk,
    FunnelCounts,
    JourneyAggregatesClient,
    SchemaDrift,
    build_aggregate_query,
    chunk_days,
    format_interval,
    funnel_counts,
    parse_interval,
    schema_drift,
)

__all__ = [
    "ACTION_MAPS_PERMISSION",
    "AGGREGATES_PERMISSION",
    "ANALYTICS_PAGE_SIZE",
    "DEFAULT_REQUESTS_PER_MINUTE",
    "FUNNEL_METRICS",
    "KNOWN_METRICS",
    "LISTING_PAGE_SIZE",
    "MAX_QUERY_DAYS",
    "READ_SCOPES",
    "REQUIRED_PERMISSIONS",
    "AggregateChunk",
    "ApiClientBase",
    "ApiConnectionError",
    "ApiError",
    "AsyncJobError",
    "AuthenticationError",
    "BudgetStore",
    "BudgetStoreError",
    "ClientConfigError",
    "ClientStats",
    "FunnelCounts",
    "JourneyAggregatesClient",
    "NotFoundError",
    "OAuthCredentials",
    "PaginationError",
    "PayloadError",
    "PermissionDeniedError",
    "PostgresBudgetStore",
    "PredictiveEngagementClient",
    "PredictiveEngagementError",
    "QueryCancelledError",
    "RateBudget",
    "RateLimitedError",
    "ResponseError",
    "RetryAfterTooLong",
    "SchemaDrift",
    "ServerError",
    "SqliteBudgetStore",
    "budget_key",
    "build_aggregate_query",
    "chunk_days",
    "format_interval",
    "funnel_counts",
    "is_write_scope",
    "parse_interval",
    "schema_drift",
]
