"""Exceptions raised by the Predictive Engagement client.

Every error that concerns a request names its endpoint as ``METHOD /path`` (never the query's
secrets, never a token), the HTTP status when there was one, and the server's ``contextId`` so an
operator can quote it to Genesys support. ``retryable`` tells an orchestrator whether running the
same extraction again later may succeed (the client has already spent its own retries).
"""

from __future__ import annotations


class PredictiveEngagementError(Exception):
    """Base class of every error the client raises."""

    retryable: bool = False


class ClientConfigError(PredictiveEngagementError, ValueError):
    """The client was configured in a way it refuses (write scope, plain http to a remote host...)."""


class ApiError(PredictiveEngagementError):
    """A request failed: an HTTP error status, or no response at all (``status`` is None).

    Attributes:
        method: HTTP method of the failed request.
        path: URL path of the failed request (no host, no query string).
        status: HTTP status, or None when no response arrived (timeout, connection error).
        context_id: the server's ``contextId`` (body) or ``ININ-Correlation-Id`` header, if any.
        code: the error body's ``code`` (e.g. ``not.found``), if any.
        detail: a short human-readable reason.
    """

    def __init__(
        self,
        method: str,
        path: str,
        status: int | None,
        detail: str,
        *,
        context_id: str | None = None,
        code: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.context_id = context_id
        self.code = code
        self.detail = detail
        if retryable is not None:
            self.retryable = retryable
        super().__init__(self._message())

    @property
    def endpoint(self) -> str:
        """``METHOD /path`` of the failed request."""
        return f"{self.method} {self.path}"

    def _message(self) -> str:
        status = f"HTTP {self.status}" if self.status is not None else "no response"
        parts = [f"{self.endpoint} -> {status}: {self.detail}"]
        if self.code:
            parts.append(f"code={self.code}")
        parts.append(f"contextId={self.context_id or '-'}")
        return " | ".join(parts)


class AuthenticationError(ApiError):
    """The token endpoint refused the credentials, or the API kept answering 401 after a renewal."""


class NotFoundError(ApiError):
    """404: the entity does not exist, or (campaign analytics) the campaign was archived."""


class ServerError(ApiError):
    """5xx that persisted through every retry."""

    retryable = True


class ApiConnectionError(ApiError):
    """Timeouts and connection errors that persisted through every retry (``status`` is None)."""

    retryable = True


class RateLimitedError(ApiError):
    """429 that persisted through every retry. ``retry_after`` is the server's last ask, in seconds."""

    retryable = True

    def __init__(self, *args: object, retry_after: float | None = None, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


class RetryAfterTooLong(RateLimitedError):
    """The server asked to wait longer than ``max_retry_after_seconds``.

    The client does not sleep for minutes or hours inside a run: it fails at once. This error is
    *retryable by the orchestrator*: schedule the same extraction again after ``retry_after``
    seconds (e.g. a Dagster ``RetryPolicy`` or ``RetryRequested(seconds_to_wait=...)``).
    """

    retryable = True


class ResponseError(PredictiveEngagementError):
    """Base of errors about a response that arrived but cannot be used."""

    def __init__(self, endpoint: str, detail: str, *, status: int | None = None, context_id: str | None = None) -> None:
        self.endpoint = endpoint
        self.status = status
        self.context_id = context_id
        self.detail = detail
        status_text = f"HTTP {status}" if status is not None else "no status"
        super().__init__(f"{endpoint} -> {status_text}: {detail} | contextId={context_id or '-'}")


class PayloadError(ResponseError):
    """A 2xx response whose body is unusable: not JSON, NaN/Infinity, wrong shape, wrong day/campaign."""


class PaginationError(ResponseError):
    """A ``nextPageUri`` the client refuses to follow: foreign host, a loop, or too many pages."""


class PermissionDeniedError(ApiError):
    """403 ``missing.any.permissions`` / ``missing.permissions``: the OAuth client's role lacks a permission.

    Never retryable: no amount of waiting grants a permission; an administrator must add it to
    the role of the OAuth client. ``missing_permissions`` lists what the body named (or, when it
    named none, what the endpoint is documented to need).
    """

    retryable = False

    def __init__(self, *args: object, missing_permissions: tuple[str, ...] = (), **kwargs: object) -> None:
        self.missing_permissions = missing_permissions
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


class AsyncJobError(PredictiveEngagementError):
    """An async aggregate job that gave no results: FAILED/EXPIRED again after one resubmission,
    or still running at the polling deadline (then ``retryable``: a later run may find the service
    less busy).

    Attributes:
        endpoint: ``METHOD /path`` of the job family.
        job_id: the last job submitted.
        state: its last state (``FAILED``, ``EXPIRED``, ``CANCELLED``, or ``PENDING``/``QUEUED`` at
            the deadline).
        detail: the job's ``errorMessage`` or why the client gave up.
    """

    def __init__(self, endpoint: str, job_id: str, state: str, detail: str, *, retryable: bool) -> None:
        self.endpoint, self.job_id, self.state, self.detail = endpoint, job_id, state, detail
        self.retryable = retryable
        super().__init__(f"{endpoint} -> job {job_id} {state}: {detail}")


class QueryCancelledError(PredictiveEngagementError):
    """The caller's cancel hook asked to stop; any async job in flight was deleted first."""


class BudgetStoreError(PredictiveEngagementError):
    """The shared rate budget's store (PE_BUDGET_URL's PostgreSQL) cannot be reached or refused us.

    The client fails closed: it sends no request without a budget slot, so nothing was sent.
    Retryable: a later attempt succeeds once the database answers again. The message names the
    store's host, port and database, never its password.
    """

    retryable = True
