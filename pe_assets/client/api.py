"""The Predictive Engagement API client: endpoints, pagination, retries, budget, stats."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpx

from .auth import READ_SCOPES, OAuthCredentials, TokenProvider, check_requested_scopes
from .budget import Grant, RateBudget, budget_key
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

log = logging.getLogger("pe_assets.client")

T = TypeVar("T")
R = TypeVar("R")

BASE_PATH = "/api/v2/predictive-engagement"
#: Largest page the analytics endpoint serves (the guide's "maximum allowed").
ANALYTICS_PAGE_SIZE = 1000
#: Largest page of the campaign and scorecard listings.
LISTING_PAGE_SIZE = 100
_JOURNEY_METRICS = ("totalContacts", "totalConverted", "overallConversionRate")
_PERFORMANCE_METRICS = (
    "precision",
    "recall",
    "f1Score",
    "auc",
    "actualConversionRate",
    "predictedConversionRate",
)


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


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, dtime(0), tzinfo=UTC)


def _iso_z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _require_day(endpoint: str, body: dict[str, Any], day: date) -> None:
    """The page's dateFrom/dateTo must be exactly the UTC day asked for (any ISO spelling)."""
    start = _utc_midnight(day)
    for name, expected in (("dateFrom", start), ("dateTo", start + timedelta(days=1))):
        got = _parse_instant(body.get(name))
        if got != expected:
            raise PayloadError(endpoint, f"{name} is {body.get(name)!r}, asked for {_iso_z(expected)}", status=200)


class PredictiveEngagementClient:
    """Read-only client of the Predictive Engagement analytics API (see the OpenAPI contract).

    One pooled ``httpx.Client`` (keep-alive, TLS verification on) is shared by every thread. Each
    request first takes a slot from the rate budget of the OAuth client with the most budget left
    (shared across processes via ``budget_path``), then gets that client's bearer token, then is
    sent; failures are retried by tenacity (429 after Retry-After; 5xx, timeouts and connection
    errors with exponential backoff and jitter; a 401 renews the token and repeats the call once).

    Args:
        api_url: API base, e.g. ``https://api.mypurecloud.com`` (http only for loopback hosts).
        login_url: login base, e.g. ``https://login.mypurecloud.com``.
        credentials: one or more OAuth clients with the same read scopes; requests are spread
            across them, each with its own budget and token.
        requests_per_minute: requests allowed per OAuth client in any ``rate_window_seconds``.
        budget_path: SQLite file shared by every process using these clients (None: this client only).
        timeout_seconds: httpx timeout (connect, read, write, pool).
        max_retry_after_seconds: a 429 asking for a longer wait raises RetryAfterTooLong at once.
        max_attempts: attempts per request for 5xx, timeouts and connection errors.
        max_concurrency: threads of ``map`` and connections of the pool.
        rate_window_seconds: the window of ``requests_per_minute`` (60; tests shrink it).
        scopes: scopes to request; only read scopes are accepted.
        clock: seconds since the epoch (token expiry and budget; shared budgets need ``time.time``).
        sleep: how to wait (tests inject a fake).
        max_pages: pagination bound per listing or journey day.
        max_rate_limited_attempts: attempts per request while the server keeps answering 429.
        backoff_seconds: first exponential backoff step.
    """

    def __init__(
        self,
        api_url: str,
        login_url: str,
        credentials: Sequence[OAuthCredentials] | OAuthCredentials,
        *,
        requests_per_minute: int = 80,
        budget_path: Path | str | None = None,
        timeout_seconds: float = 30.0,
        max_retry_after_seconds: float = 300.0,
        max_attempts: int = 5,
        max_concurrency: int = 8,
        rate_window_seconds: float = 60.0,
        scopes: Sequence[str] = READ_SCOPES,
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
        self.scopes = check_requested_scopes(scopes)
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
        self._budget = RateBudget(
            Path(budget_path) if budget_path is not None else None,
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
            f"PredictiveEngagementClient(api_url={self.api_url!r}, client_ids={ids!r}, "
            f"requests_per_minute={self.requests_per_minute}, rate_window_seconds={self.rate_window_seconds})"
        )

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the thread pool and close the connection pool and the budget file."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()
        self._budget.close()

    def __enter__(self) -> PredictiveEngagementClient:
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

    # -- endpoints --------------------------------------------------------------------------------
    def list_campaign_pages(self, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every raw page of the campaign listing, in the order served (``pageSize=100``)."""
        params: list[tuple[str, str | int]] = [("pageSize", LISTING_PAGE_SIZE)]
        params += [("status", s) for s in statuses or ()]
        return self._paginate(f"{BASE_PATH}/campaigns", params, self._check_listing)

    def list_campaigns(self, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every campaign entity of the listing (optionally only those in ``statuses``)."""
        return [e for page in self.list_campaign_pages(statuses) for e in page["entities"]]

    def get_campaign(self, campaign_id: str) -> dict[str, Any]:
        """One campaign (archived campaigns answer too, with ``status: archived``)."""
        path = f"{BASE_PATH}/campaigns/{_segment(campaign_id)}"
        body, endpoint = self._get_json(path, None)
        if not isinstance(body, dict) or body.get("id") != campaign_id or not isinstance(body.get("status"), str):
            raise PayloadError(endpoint, f"not the campaign {campaign_id!r} (id or status missing)", status=200)
        return body

    def get_campaign_journey_pages(self, campaign_id: str, day: date) -> list[dict[str, Any]]:
        """Every raw page of one campaign's journey funnel for one UTC day, in the order served.

        Follows ``nextPageUri`` (never page-number arithmetic). Each page must be about this
        campaign and exactly this day. Raises NotFoundError if the campaign is archived, even
        in the middle of the pagination.
        """
        start = _utc_midnight(day)
        params: list[tuple[str, str | int]] = [
            ("dateFrom", _iso_z(start)),
            ("dateTo", _iso_z(start + timedelta(days=1))),
            ("groupBy", "step"),
            ("pageSize", ANALYTICS_PAGE_SIZE),
        ]

        def check(endpoint: str, body: Any) -> None:
            if not isinstance(body, dict):
                raise PayloadError(endpoint, "journey page is not a JSON object", status=200)
            if body.get("campaignId") != campaign_id:
                raise PayloadError(
                    endpoint,
                    f"campaignId is {body.get('campaignId')!r}, asked for {campaign_id!r}",
                    status=200,
                )
            _require_day(endpoint, body, day)
            metrics = body.get("metrics")
            if not isinstance(metrics, dict):
                raise PayloadError(endpoint, "journey page has no metrics object", status=200)
            missing = [m for m in _JOURNEY_METRICS if m not in metrics]
            if missing:
                raise PayloadError(endpoint, f"journey metrics lack {missing}", status=200)
            # Individual steps are not checked: a damaged step is the transform's to quarantine.
            if not isinstance(body.get("steps"), list):
                raise PayloadError(endpoint, "journey page's steps is not a list", status=200)
            _check_next(endpoint, body)

        return self._paginate(f"{BASE_PATH}/campaigns/{_segment(campaign_id)}/analytics", params, check)

    def list_scorecard_pages(self) -> list[dict[str, Any]]:
        """Every raw page of the scorecard listing, in the order served (``pageSize=100``)."""
        return self._paginate(f"{BASE_PATH}/scorecards", [("pageSize", LISTING_PAGE_SIZE)], self._check_listing)

    def list_scorecards(self) -> list[dict[str, Any]]:
        """Every scorecard entity of the listing."""
        return [e for page in self.list_scorecard_pages() for e in page["entities"]]

    def get_scorecard(self, scorecard_id: str) -> dict[str, Any]:
        """One scorecard (its current ``modelVersion`` and ``lastRetrainedDate``)."""
        body, endpoint = self._get_json(f"{BASE_PATH}/scorecards/{_segment(scorecard_id)}", None)
        if not isinstance(body, dict) or body.get("id") != scorecard_id:
            raise PayloadError(endpoint, f"not the scorecard {scorecard_id!r}", status=200)
        return body

    def get_scorecard_performance(self, scorecard_id: str, day: date) -> dict[str, Any]:
        """A scorecard's model performance over one UTC day, as served (``metric=performance``)."""
        start = _utc_midnight(day)
        params: list[tuple[str, str | int]] = [
            ("dateFrom", _iso_z(start)),
            ("dateTo", _iso_z(start + timedelta(days=1))),
            ("metric", "performance"),
        ]
        body, endpoint = self._get_json(f"{BASE_PATH}/scorecards/{_segment(scorecard_id)}/analytics", params)
        if not isinstance(body, dict):
            raise PayloadError(endpoint, "scorecard analytics is not a JSON object", status=200)
        if body.get("scorecardId") != scorecard_id:
            raise PayloadError(
                endpoint,
                f"scorecardId is {body.get('scorecardId')!r}, asked for {scorecard_id!r}",
                status=200,
            )
        _require_day(endpoint, body, day)
        missing = [f for f in ("scorecardName", "modelVersion", "lastRetrainedDate") if f not in body]
        if missing:
            raise PayloadError(endpoint, f"scorecard analytics lacks {missing}", status=200)
        metrics = body.get("performanceMetrics")
        if not isinstance(metrics, dict) or any(m not in metrics for m in _PERFORMANCE_METRICS):
            raise PayloadError(
                endpoint, f"performanceMetrics missing or lacking one of {_PERFORMANCE_METRICS}", status=200
            )
        if not isinstance(body.get("scoreDistribution"), dict):
            raise PayloadError(endpoint, "scoreDistribution is not an object", status=200)
        return body

    # -- pagination -------------------------------------------------------------------------------
    @staticmethod
    def _check_listing(endpoint: str, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("entities"), list):
            raise PayloadError(endpoint, "listing page has no entities list", status=200)
        if not all(isinstance(e, dict) and isinstance(e.get("id"), str) for e in body["entities"]):
            raise PayloadError(endpoint, "listing entity without an id", status=200)
        _check_next(endpoint, body)

    def _resolve_next(self, endpoint: str, next_uri: str) -> str:
        """Resolve a ``nextPageUri`` against ``api_url``; refuse any other scheme, host or port.

        The bearer token goes only to the configured API host, so a page pointing elsewhere is a
        PaginationError, never a request.
        """
        resolved = urljoin(self.api_url + "/", next_uri)
        parts = urlsplit(resolved)
        if parts.username or parts.password or origin(resolved) != self._api_origin or parts.fragment:
            raise PaginationError(
                endpoint,
                f"nextPageUri points outside {self.api_url} (to {parts.scheme}://{parts.netloc}); refused",
            )
        return resolved

    def _paginate(
        self, path: str, params: list[tuple[str, str | int]], check: Callable[[str, Any], None]
    ) -> list[dict[str, Any]]:
        pages: list[dict[str, Any]] = []
        body, endpoint = self._get_json(path, params)
        check(endpoint, body)
        pages.append(body)
        seen: set[str] = set()
        while body["nextPageUri"] is not None:
            url = self._resolve_next(endpoint, body["nextPageUri"])
            if url in seen:
                raise PaginationError(endpoint, f"nextPageUri repeats after {len(pages)} pages (a loop)", status=200)
            if len(pages) >= self.max_pages:
                raise PaginationError(endpoint, f"more than {self.max_pages} pages", status=200)
            seen.add(url)
            body, endpoint = self._get_json(url, None)
            check(endpoint, body)
            pages.append(body)
        return pages

    # -- requests ---------------------------------------------------------------------------------
    def _get_json(self, path_or_url: str, params: list[tuple[str, str | int]] | None) -> tuple[Any, str]:
        """GET with budget, token, retries; return (parsed JSON, ``GET /path``)."""
        url = path_or_url if "://" in path_or_url else self.api_url + path_or_url
        path = urlsplit(url).path
        endpoint = f"GET {path}"

        def on_retry(exc: BaseException, delay: float) -> None:
            self._stats.add("retries")
            log.warning("retrying %s in %.2fs after: %s", endpoint, delay, exc)

        response = retrying(self._retry, sleep=self._sleep, on_retry=on_retry, rng=self._rng)(
            self._attempt, url, path, params
        )
        body = parse_json(response, endpoint)
        if isinstance(body, dict) and isinstance(body.get("contextId"), str) and "status" in body:
            # A 2xx carrying an error body is not data.
            raise PayloadError(
                endpoint,
                f"error body with HTTP 200: {body.get('message')!r}",
                status=200,
                context_id=context_id(response, body),
            )
        self._stats.add("pages")
        return body, endpoint

    def _attempt(self, url: str, path: str, params: list[tuple[str, str | int]] | None) -> httpx.Response:
        """One attempt; a 401 renews that OAuth client's token and repeats the call once."""
        credential, response, token = self._send(self._keys, url, path, params)
        if response.status_code == 401:
            credential.tokens.invalidate(token)
            self._stats.add("retries")
            credential, response, _ = self._send([credential.key], url, path, params)
            if response.status_code == 401:
                err = error_for_status("GET", path, response, max_retry_after=self.max_retry_after_seconds)
                raise AuthenticationError(
                    "GET",
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
        raise error_for_status("GET", path, response, max_retry_after=self.max_retry_after_seconds)

    def _acquire(self, keys: Sequence[str], path: str) -> Grant:
        while True:
            decision = self._budget.try_acquire(keys)
            if isinstance(decision, Grant):
                return decision
            if decision.hold_seconds > self.max_retry_after_seconds:
                # Another thread or process was told to wait hours: fail now, retryably.
                raise RetryAfterTooLong(
                    "GET",
                    path,
                    429,
                    f"every OAuth client is held for {decision.hold_seconds:.0f}s (> "
                    f"{self.max_retry_after_seconds:.0f}s cap) after a 429; retry the extraction later",
                    retry_after=decision.hold_seconds,
                )
            self._stats.waited(decision.seconds)
            self._sleep(decision.seconds)

    def _send(
        self, keys: Sequence[str], url: str, path: str, params: list[tuple[str, str | int]] | None
    ) -> tuple[_Credential, httpx.Response, str]:
        """Take a budget slot, send once, release the slot when the answer (or failure) is in."""
        grant = self._acquire(keys, path)
        credential = self._credentials[grant.key]
        try:
            token = credential.tokens.get()
            self._stats.request(credential.credentials.client_id)
            try:
                response = self._http.get(url, params=params, headers={"Authorization": f"Bearer {token}"})
            except httpx.TransportError as exc:
                raise connection_error("GET", path, exc) from None
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


def _check_next(endpoint: str, body: dict[str, Any]) -> None:
    if "nextPageUri" not in body:
        raise PayloadError(endpoint, "page has no nextPageUri field", status=200)
    if body["nextPageUri"] is not None and not (isinstance(body["nextPageUri"], str) and body["nextPageUri"]):
        raise PayloadError(endpoint, f"nextPageUri is not a URI: {body['nextPageUri']!r}", status=200)


def _segment(value: str) -> str:
    """Percent-encode an id as one path segment (an id like ``../x`` cannot change the path)."""
    if not isinstance(value, str) or not value:
        raise ClientConfigError(f"an id must be a non-empty string, got {value!r}")
    return quote(value, safe="")
