"""What every API client of this package shares: construction, tokens, the rate budget, retries,
the thread pool and the stats. One copy, used by ``PredictiveEngagementClient`` (the seed
contract) and ``JourneyAggregatesClient`` (the real Genesys endpoints); each adds its endpoints.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from .auth import READ_SCOPES, OAuthCredentials, TokenProvider, check_requested_scopes
from .budget import BudgetStore, Grant, RateBudget, budget_key
from .errors import (
    AuthenticationError,
    ClientConfigError,
    PaginationError,
    PayloadError,
    RetryAfterTooLong,
)
from .http import (
    RetrySettings,
    check_base_url,
    connection_error,
    context_id,
    error_for_status,
    exhausted_window_seconds,
    origin,
    parse_json,
    retry_after_seconds,
    retrying,
)

#: The domain guide's cap per OAuth client and minute (the one default of PE_REQUESTS_PER_MINUTE).

DEFAULT_REQUESTS_PER_MINUTE = 80
log = logging.getLogger("pe_assets.client")

T = TypeVar("T")
R = TypeVar("R")

#: Query parameters as httpx takes them (a list keeps repeated keys and their order).
Params = list[tuple[str, str | int]]


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of what a client did (no secrets, no tokens).

    Attributes:
        requests: API requests sent (every attempt, retries included; token requests excluded).
        pages: successful API responses (pages of listings and analytics, single entities).
        rate_limited_429s: 429 answers received (API and token endpoint).
        retries: attempts repeated after a failure (429, 5xx, timeout, connection error, 401 renewal).
        token_requests: requests sent to the token endpoint.
        requests_by_client: API requests sent per OAuth client id.
        budget_wait_seconds: total time threads spent waiting for the rate budget.
    """

    requests: int = 0
    pages: int = 0
    rate_limited_429s: int = 0
    retries: int = 0
    token_requests: int = 0
    requests_by_client: dict[str, int] = field(default_factory=dict)
    budget_wait_seconds: float = 0.0


class _StatsRecorder:
    """Thread-safe counters behind ``ClientStats``."""

    def __init__(self, client_ids: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._counts = {"requests": 0, "pages": 0, "rate_limited_429s": 0, "retries": 0, "token_requests": 0}
        self._by_client = dict.fromkeys(client_ids, 0)
        self._wait = 0.0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def request(self, client_id: str) -> None:
        with self._lock:
            self._counts["requests"] += 1
            self._by_client[client_id] += 1

    def waited(self, seconds: float) -> None:
        with self._lock:
            self._wait += seconds

    def snapshot(self) -> ClientStats:
        with self._lock:
            return ClientStats(**self._counts, requests_by_client=dict(self._by_client), budget_wait_seconds=self._wait)


@dataclass
class _Credential:
    credentials: OAuthCredentials
    key: str
    tokens: TokenProvider


class ApiClientBase:
    """Construction and request machinery shared by the API clients (see the subclasses' docs).

    One pooled ``httpx.Client`` (keep-alive, TLS verification on) is shared by every thread. Each
    request first takes a slot from the rate budget of the OAuth client with the most budget left
    (shared across processes via ``budget_path``: a SQLite file, or a ``PostgresBudgetStore``
    shared across hosts), then gets that client's bearer token, then is
    sent; failures are retried by tenacity (429 after Retry-After; 5xx, timeouts and connection
    errors with exponential backoff and jitter; a 401 renews the token and repeats the call once).
    Rate-limit headers (``X-RateLimit-*`` and Genesys' ``inin-ratelimit-*``) saying the server's
    window is used up, and a 429's Retry-After, hold that OAuth client in the shared budget.

    Subclasses set ``ALLOWED_SCOPES`` (what may be asked of the token endpoint), ``DEFAULT_SCOPES``
    (what is asked when the caller says nothing) and ``SCOPES_OPTIONAL`` (True when the API needs
    no scope at all).

    Args:
        api_url: API base, e.g. ``https://api.mypurecloud.com`` (http only for loopback hosts).
        login_url: login base, e.g. ``https://login.mypurecloud.com``.
        credentials: one or more OAuth clients with the same read scopes; requests are spread
            across them, each with its own budget and token.
        requests_per_minute: requests allowed per OAuth client in any ``rate_window_seconds``.
        budget_path: SQLite file shared by every process using these clients, or a ``BudgetStore``
            (PostgreSQL: shared across hosts); None: this client only.
        timeout_seconds: httpx timeout (connect, read, write, pool).
        max_retry_after_seconds: a 429 asking for a longer wait raises RetryAfterTooLong at once.
        max_attempts: attempts per request for 5xx, timeouts and connection errors.
        max_concurrency: threads of ``map`` and connections of the pool.
        rate_window_seconds: the window of ``requests_per_minute`` (60; tests shrink it).
        scopes: scopes to request (default ``DEFAULT_SCOPES``); only read scopes are accepted.
        clock: seconds since the epoch (token expiry and budget; shared budgets need ``time.time``).
        sleep: how to wait (tests inject a fake).
        max_pages: pagination bound per listing or journey day.
        max_rate_limited_attempts: attempts per request while the server keeps answering 429.
        backoff_seconds: first exponential backoff step.
    """

    ALLOWED_SCOPES: tuple[str, ...] = READ_SCOPES
    DEFAULT_SCOPES: tuple[str, ...] = READ_SCOPES
    SCOPES_OPTIONAL: bool = False

    def __init__(
        self,
        api_url: str,
        login_url: str,
        credentials: Sequence[OAuthCredentials] | OAuthCredentials,
        *,
        requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE,
        budget_path: Path | str | BudgetStore | None = None,
        timeout_seconds: float = 30.0,
        max_retry_after_seconds: float = 300.0,
        max_attempts: int = 5,
        max_concurrency: int = 8,
        rate_window_seconds: float = 60.0,
        scopes: Sequence[str] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_pages: int = 1000,
        max_rate_limited_attempts: int = 20,
        backoff_seconds: float = 0.5,
    ) -> None:
        self.api_url = check_base_url(api_url, "api_url")
        self.login_url = check_base_url(login_url, "login_url")
        self._api_origin = origin(self.api_url)
        if isinstance(credentials, OAuthCredentials):
            credentials = [credentials]
        credentials = list(credentials)
        if not credentials or not all(isinstance(c, OAuthCredentials) for c in credentials):
            raise ClientConfigError("credentials must be one or more OAuthCredentials")
        if len({c.client_id for c in credentials}) != len(credentials):
            raise ClientConfigError("each OAuth client may be given only once")
        self.scopes = check_requested_scopes(
            self.DEFAULT_SCOPES if scopes is None else scopes, self.ALLOWED_SCOPES, allow_none=self.SCOPES_OPTIONAL
        )
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("max_attempts", max_attempts),
            ("max_concurrency", max_concurrency),
            ("max_pages", max_pages),
            ("max_rate_limited_attempts", max_rate_limited_attempts),
        ):
            if not isinstance(value, int) or value < 1:
                raise ClientConfigError(f"{name} must be a positive integer, got {value!r}")
        for name, number in (
            ("timeout_seconds", timeout_seconds),
            ("rate_window_seconds", rate_window_seconds),
            ("max_retry_after_seconds", max_retry_after_seconds),
        ):
            if not number > 0:
                raise ClientConfigError(f"{name} must be positive, got {number!r}")
        self.requests_per_minute = requests_per_minute
        self.rate_window_seconds = float(rate_window_seconds)
        self.max_retry_after_seconds = float(max_retry_after_seconds)
        self.max_concurrency = max_concurrency
        self.max_pages = max_pages
        self._clock = clock
        self._sleep = sleep
        self._rng = random.Random()
        self._retry = RetrySettings(
            max_attempts=max_attempts,
            max_rate_limited_attempts=max_rate_limited_attempts,
            backoff_seconds=backoff_seconds,
        )
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=max_concurrency + 2, max_keepalive_connections=max_concurrency + 2),
            verify=True,
            follow_redirects=False,  # a redirect could carry the bearer token elsewhere
            headers={"Accept": "application/json", "User-Agent": "pe_assets-client/1"},
        )
        # A store fails closed: when it cannot be reached, try_acquire raises BudgetStoreError
        # (not retried here, never a request sent without a slot).
        self._budget = RateBudget(
            budget_path if isinstance(budget_path, BudgetStore) or budget_path is None else Path(budget_path),
            cap=requests_per_minute,
            window=self.rate_window_seconds,
            clock=clock,
            # A request cannot run much longer than its timeouts; a crashed process's slot frees then.
            inflight_deadline=4 * timeout_seconds + 5,
        )
        self._stats = _StatsRecorder(c.client_id for c in credentials)
        self._credentials: dict[str, _Credential] = {}
        for cred in credentials:
            key = budget_key(cred.client_id)
            tokens = TokenProvider(
                self._http,
                self.login_url,
                cred,
                self.scopes,
                clock=clock,
                sleep=sleep,
                retry=self._retry,
                max_retry_after=self.max_retry_after_seconds,
                on_request=lambda: self._stats.add("token_requests"),
            )
            self._credentials[key] = _Credential(cred, key, tokens)
        self._keys = list(self._credentials)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._in_pool = threading.local()
        self._closed = False

    def __repr__(self) -> str:
        ids = [c.credentials.client_id for c in self._credentials.values()]
        return (
            f"{type(self).__name__}(api_url={self.api_url!r}, client_ids={ids!r}, "
            f"requests_per_minute={self.requests_per_minute}, rate_window_seconds={self.rate_window_seconds})"
        )

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the thread pool and close the connection pool and the budget store."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()
        self._budget.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def stats(self) -> ClientStats:
        """What the client did so far (a consistent snapshot)."""
        return self._stats.snapshot()

    # -- concurrency ------------------------------------------------------------------------------
    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """Run ``fn`` over ``items`` on the client's pool of ``max_concurrency`` threads.

        Results keep the order of ``items``. The first failure (in item order) is re-raised after
        the tasks not yet started are cancelled. Called from inside ``fn`` it runs sequentially
        (a nested map on the same bounded pool could deadlock).
        """
        items = list(items)
        if getattr(self._in_pool, "active", False) or len(items) <= 1:
            return [fn(item) for item in items]

        def run(item: T) -> R:
            self._in_pool.active = True
            try:
                return fn(item)
            finally:
                self._in_pool.active = False

        with self._pool_lock:
            if self._closed:
                raise ClientConfigError("the client is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="pe-client")
            futures: list[Future[R]] = [self._pool.submit(run, item) for item in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    # -- URLs -------------------------------------------------------------------------------------
    def _resolve_next(self, endpoint: str, next_uri: str) -> str:
        """Resolve a next-page URI (absolute, or relative to the API host) against ``api_url``;
        refuse any other scheme, host or port.

        The bearer token goes only to the configured API host, so a page pointing elsewhere is a
        PaginationError, never a request; and httpx only ever gets an absolute URL.
        """
        resolved = urljoin(self.api_url + "/", next_uri)
        parts = urlsplit(resolved)
        if parts.username or parts.password or origin(resolved) != self._api_origin or parts.fragment:
            raise PaginationError(
                endpoint,
                f"next page URI points outside {self.api_url} (to {parts.scheme}://{parts.netloc}); refused",
            )
        return resolved

    # -- requests ---------------------------------------------------------------------------------
    def _request_json(
        self,
        method: str,
        path_or_url: str,
        params: Params | None = None,
        *,
        json_body: Any = None,
        permissions: Sequence[str] = (),
    ) -> tuple[Any, str, httpx.Response]:
        """Send with budget, token, retries; return (parsed JSON, ``METHOD /path``, response).

        ``permissions``: what the endpoint needs (named in a PermissionDeniedError when a 403 does
        not say).
        """
        response, endpoint = self._request(method, path_or_url, params, json_body=json_body, permissions=permissions)
        body = parse_json(response, endpoint)
        if isinstance(body, dict) and isinstance(body.get("contextId"), str) and "status" in body:
            # A 2xx carrying an error body is not data.
            raise PayloadError(
                endpoint,
                f"error body with HTTP {response.status_code}: {body.get('message')!r}",
                status=response.status_code,
                context_id=context_id(response, body),
            )
        self._stats.add("pages")
        return body, endpoint, response

    def _request(
        self,
        method: str,
        path_or_url: str,
        params: Params | None = None,
        *,
        json_body: Any = None,
        permissions: Sequence[str] = (),
        retry: bool = True,
    ) -> tuple[httpx.Response, str]:
        """Send with budget, token and (unless ``retry`` is False) retries; return a 2xx response
        and ``METHOD /path``. Non-2xx answers raise (see ``error_for_status``)."""
        url = path_or_url if "://" in path_or_url else self.api_url + path_or_url
        path = urlsplit(url).path
        endpoint = f"{method} {path}"
        if not retry:
            return self._attempt(method, url, path, params, json_body, permissions), endpoint

        def on_retry(exc: BaseException, delay: float) -> None:
            self._stats.add("retries")
            log.warning("retrying %s in %.2fs after: %s", endpoint, delay, exc)

        response = retrying(self._retry, sleep=self._sleep, on_retry=on_retry, rng=self._rng)(
            self._attempt, method, url, path, params, json_body, permissions
        )
        log.debug(
            "%s -> HTTP %s correlation=%s ratelimit=%s/%s reset=%s",
            endpoint,
            response.status_code,
            context_id(response) or "-",
            response.headers.get("inin-ratelimit-count", "-"),
            response.headers.get("inin-ratelimit-allowed", "-"),
            response.headers.get("inin-ratelimit-reset", "-"),
        )
        return response, endpoint

    def _attempt(
        self,
        method: str,
        url: str,
        path: str,
        params: Params | None,
        json_body: Any,
        permissions: Sequence[str],
    ) -> httpx.Response:
        """One attempt; a 401 renews that OAuth client's token and repeats the call once."""
        credential, response, token = self._send(self._keys, method, url, path, params, json_body)
        if response.status_code == 401:
            credential.tokens.invalidate(token)
            self._stats.add("retries")
            credential, response, _ = self._send([credential.key], method, url, path, params, json_body)
            if response.status_code == 401:
                err = error_for_status(method, path, response, max_retry_after=self.max_retry_after_seconds)
                raise AuthenticationError(
                    method,
                    path,
                    401,
                    f"401 again after renewing the token: {err.detail}",
                    context_id=err.context_id,
                    code=err.code,
                    # The login host just accepted our credentials: a 401 now is a revocation race,
                    # not a wrong secret, so a later step retry can succeed.
                    retryable=True,
                )
        if response.is_success:
            return response
        raise error_for_status(
            method, path, response, max_retry_after=self.max_retry_after_seconds, permissions=permissions
        )

    def _acquire(self, keys: Sequence[str], method: str, path: str) -> Grant:
        while True:
            decision = self._budget.try_acquire(keys)
            if isinstance(decision, Grant):
                return decision
            if decision.hold_seconds > self.max_retry_after_seconds:
                # Another thread or process was told to wait hours: fail now, retryably.
                raise RetryAfterTooLong(
                    method,
                    path,
                    429,
                    f"every OAuth client is held for {decision.hold_seconds:.0f}s (> "
                    f"{self.max_retry_after_seconds:.0f}s cap) after a 429; retry the extraction later",
                    retry_after=decision.hold_seconds,
                )
            self._stats.waited(decision.seconds)
            self._sleep(decision.seconds)

    def _send(
        self,
        keys: Sequence[str],
        method: str,
        url: str,
        path: str,
        params: Params | None,
        json_body: Any = None,
    ) -> tuple[_Credential, httpx.Response, str]:
        """Take a budget slot, send once, release the slot when the answer (or failure) is in."""
        grant = self._acquire(keys, method, path)
        credential = self._credentials[grant.key]
        try:
            token = credential.tokens.get()
            self._stats.request(credential.credentials.client_id)
            try:
                response = self._http.request(
                    method, url, params=params, json=json_body, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TransportError as exc:
                raise connection_error(method, path, exc) from None
        finally:
            self._budget.release(grant)
        if response.status_code == 429:
            self._stats.add("rate_limited_429s")
            retry_after = _retry_after_or_reset(response)
            if retry_after is not None and retry_after <= self.max_retry_after_seconds:
                # Keep every thread and process off this OAuth client until the server's instant.
                self._budget.hold(grant.key, retry_after)
        else:
            quiet = exhausted_window_seconds(response)
            if quiet is not None:
                # Bounded: a wrong header must not park the client (nor trip RetryAfterTooLong).
                self._budget.hold(grant.key, min(quiet, self.rate_window_seconds * 2, self.max_retry_after_seconds))
        return credential, response, token


def _retry_after_or_reset(response: httpx.Response) -> float | None:
    """A 429's wait: Retry-After, else the rate-limit headers' reset, else None."""
    value = retry_after_seconds(response)
    return value if value is not None else exhausted_window_seconds(response)
