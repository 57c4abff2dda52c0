"""HTTP client of the Genesys Cloud Predictive Engagement analytics API (read side).

A plain library (no Dagster): tokens with least-privilege scopes, a rate budget shared across
processes, tenacity retries, cursor pagination and payload checks. See ``PredictiveEngagementClient``.
"""

from .api import ANALYTICS_PAGE_SIZE, LISTING_PAGE_SIZE, ClientStats, PredictiveEngagementClient
from .auth import READ_SCOPES, OAuthCredentials, is_write_scope
from .budget import RateBudget, budget_key
from .errors import (
    ApiConnectionError,
    ApiError,
    AuthenticationError,
    ClientConfigError,
    NotFoundError,
    PaginationError,
    PayloadError,
    PredictiveEngagementError,
    RateLimitedError,
    ResponseError,
    RetryAfterTooLong,
    ServerError,
)

__all__ = [
    "ANALYTICS_PAGE_SIZE",
    "LISTING_PAGE_SIZE",
    "READ_SCOPES",
    "ApiConnectionError",
    "ApiError",
    "AuthenticationError",
    "ClientConfigError",
    "ClientStats",
    "NotFoundError",
    "OAuthCredentials",
    "PaginationError",
    "PayloadError",
    "PredictiveEngagementClient",
    "PredictiveEngagementError",
    "RateBudget",
    "RateLimitedError",
    "ResponseError",
    "RetryAfterTooLong",
    "ServerError",
    "budget_key",
    "is_write_scope",
]
