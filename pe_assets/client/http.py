"""HTTP plumbing shared by the token provider and the API client.

Response decoding, error mapping, Retry-After and rate-limit headers, URL safety checks and the
tenacity retry policy live here so that both callers treat the wire the same way.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import tenacity

from .errors import (
    ApiConnectionError,
    ApiError,
    ClientConfigError,
    NotFoundError,
    PayloadError,
    PermissionDeniedError,
    RateLimitedError,
    RetryAfterTooLong,
    ServerError,
)

log = logging.getLogger("pe_assets.client")


# -- URLs ------------------------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, lower-cased host, port with the scheme's default filled in) of an absolute URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def check_base_url(url: str, what: str) -> str:
    """Validate a configured base URL and return it without a trailing slash.

    ``https`` always; ``http`` only for loopback hosts (the local simulator): a bearer token or a
    client secret must never cross a network in clear.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientConfigError(f"{what} must be an absolute http(s) URL, got {url!r}")
    if parts.username or parts.password:
        raise ClientConfigError(f"{what} must not carry credentials in the URL")
    if parts.query or parts.fragment:
        raise ClientConfigError(f"{what} must not have a query or fragment, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ClientConfigError(
            f"{what} uses plain http to a non-loopback host ({parts.hostname}); use https "
            "(http is accepted only for 127.0.0.0/8, ::1 and localhost)"
        )
    return url.rstrip("/")


# -- responses -------------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not valid JSON")


def context_id(response: httpx.Response, body: Any = None) -> str | None:
    """The request's correlation id: the body's ``contextId`` or the ``ININ-Correlation-Id`` header."""
    if isinstance(body, dict) and isinstance(body.get("contextId"), str):
        return body["contextId"]
    return response.headers.get("inin-correlation-id")


def parse_json(response: httpx.Response, endpoint: str) -> Any:
    """Decode a JSON body strictly: UTF-8 only, no NaN/Infinity. Otherwise PayloadError."""
    try:
        text = response.content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            endpoint,
            f"body is not UTF-8 ({exc.reason} at byte {exc.start})",
            status=response.status_code,
            context_id=context_id(response),
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        ctype = response.headers.get("content-type", "?")
        # The body itself is not quoted: it may be a large HTML page.
        raise PayloadError(
            endpoint,
            f"body is not valid JSON ({exc}; content-type {ctype}, {len(response.content)} bytes)",
            status=response.status_code,
            context_id=context_id(response),
        ) from None


def _header_float(response: httpx.Response, name: str) -> float | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or HTTP-date), None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def exhausted_window_seconds(response: httpx.Response) -> float | None:
    """Seconds to stay quiet when the rate-limit headers say the server's window is used up.

    Reads ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` (contract) and Genesys'
    ``inin-ratelimit-count``/``-allowed``/``-reset``; both resets are seconds until the window
    resets. Returns None while there is budget left.
    """
    remaining = _header_float(response, "x-ratelimit-remaining")
    reset = _header_float(response, "x-ratelimit-reset")
    count = _header_float(response, "inin-ratelimit-count")
    allowed = _header_float(response, "inin-ratelimit-allowed")
    inin_reset = _header_float(response, "inin-ratelimit-reset")
    waits: list[float] = []
    if remaining is not None and remaining <= 0 and reset is not None:
        waits.append(reset)
    if count is not None and allowed is not None and count >= allowed and inin_reset is not None:
        waits.append(inin_reset)
    if not waits:
        return None
    # Whole seconds may be rounded down: never treat "0" as "go now".
    return max(max(waits), 0.5)


#: Genesys permission names: ``domain:entity:action`` (``analytics:journeyAggregate:view``); the seed
#: contract's scopes have two parts (``predictive-engagement:view``).
_PERMISSION = re.compile(r"[A-Za-z][\w-]*(?::[A-Za-z*][\w*-]*){1,2}")
_PERMISSION_CODES = frozenset({"missing.any.permissions", "missing.permissions"})


def _named_permissions(body: Any) -> tuple[str, ...]:
    """Permissions a Genesys 403 body names, in order, without repeats.

    Genesys writes them into ``message`` ("... at least one of the following permissions
    assigned: [analytics:journeyAggregate:view]") and sometimes ``messageParams``; both are read.
    """
    if not isinstance(body, dict):
        return ()
    texts: list[str] = [body.get("message") or ""]
    params = body.get("messageParams")
    if isinstance(params, dict):
        texts += [v for v in params.values() if isinstance(v, str)]
    found: list[str] = []
    for text in texts:
        if isinstance(text, str):
            found += _PERMISSION.findall(text)
    return tuple(dict.fromkeys(found))


def error_for_status(
    method: str,
    path: str,
    response: httpx.Response,
    *,
    max_retry_after: float,
    permissions: Sequence[str] = (),
) -> ApiError:
    """The exception for a non-2xx response (RetryAfterTooLong when the server asks too long a wait).

    ``permissions``: what the endpoint needs, named in a PermissionDeniedError when a 403 body
    does not say which permission is missing.
    """
    status = response.status_code
    try:
        body: Any = json.loads(response.content.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:
        body = None
    ctx = context_id(response, body)
    code = body.get("code") if isinstance(body, dict) and isinstance(body.get("code"), str) else None
    if code is None and isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body["error"]  # OAuth error body
    message = body.get("message") if isinstance(body, dict) else None
    detail = message if isinstance(message, str) and message else response.reason_phrase or "error"
    detail = detail[:300]
    if status == 429:
        retry_after = retry_after_seconds(response)
        if retry_after is not None and retry_after > max_retry_after:
            return RetryAfterTooLong(
                method,
                path,
                status,
                f"Retry-After {retry_after:.0f}s exceeds the {max_retry_after:.0f}s cap; retry the extraction later",
                context_id=ctx,
                code=code,
                retry_after=retry_after,
            )
        return RateLimitedError(method, path, status, detail, context_id=ctx, code=code, retry_after=retry_after)
    if status == 404:
        return NotFoundError(method, path, status, detail, context_id=ctx, code=code)
    if status == 403 and code in _PERMISSION_CODES:
        missing = _named_permissions(body) or tuple(permissions)
        named = ", ".join(missing) if missing else "a permission the body does not name"
        return PermissionDeniedError(
            method,
            path,
            status,
            f"the OAuth client's role lacks {named}; grant it in Genesys Cloud (not retryable) ({detail})"[:400],
            context_id=ctx,
            code=code,
            missing_permissions=missing,
        )
    if status >= 500:
        return ServerError(method, path, status, detail, context_id=ctx, code=code)
    return ApiError(method, path, status, detail, context_id=ctx, code=code, retryable=False)


def connection_error(method: str, path: str, exc: httpx.TransportError) -> ApiConnectionError:
    """Wrap an httpx transport failure (timeout, refused, reset) without quoting its request."""
    return ApiConnectionError(method, path, None, f"{type(exc).__name__}: {exc}"[:300])


# -- retries ---------------------------------------------------------------------------------
@dataclass
class RetrySettings:
    """Bounds of the retry policy.

    Attributes:
        max_attempts: attempts per request for 5xx, timeouts and connection errors.
        max_rate_limited_attempts: attempts per request while the server answers 429 (each wait is
            the server's Retry-After, so these are cheap and bounded separately).
        backoff_seconds: first exponential backoff step (doubles per attempt, plus jitter).
        max_backoff_seconds: ceiling of one exponential wait.
    """

    max_attempts: int = 5
    max_rate_limited_attempts: int = 20
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0


def is_retryable(exc: BaseException) -> bool:
    """Retry 429 (unless the wait is too long), 5xx, timeouts and connection errors; nothing else."""
    if isinstance(exc, RetryAfterTooLong):
        return False
    return isinstance(exc, (RateLimitedError, ServerError, ApiConnectionError))


class _Stop:
    """Counts 429s and other failures separately (one instance per request)."""

    def __init__(self, settings: RetrySettings) -> None:
        self.settings = settings
        self.rate_limited = 0
        self.failed = 0

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RateLimitedError):
            self.rate_limited += 1
            return self.rate_limited >= self.settings.max_rate_limited_attempts
        self.failed += 1
        return self.failed >= self.settings.max_attempts


class _Wait:
    """429: the server's Retry-After plus jitter; otherwise exponential backoff with full jitter."""

    def __init__(self, settings: RetrySettings, stop: _Stop, rng: random.Random) -> None:
        self.settings, self.stop, self.rng = settings, stop, rng

    def _exponential(self, attempt: int) -> float:
        ceiling = min(self.settings.max_backoff_seconds, self.settings.backoff_seconds * 2 ** (attempt - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RateLimitedError):
            if exc.retry_after is not None:
                # Jitter spreads the threads/processes that were all told the same instant.
                return exc.retry_after + self.rng.uniform(0.05, 0.05 + min(1.0, 0.1 * exc.retry_after))
            # No Retry-After: back off from 1 s (never hammer a server that says "too many").
            return max(1.0, self._exponential(self.stop.rate_limited))
        return self._exponential(self.stop.failed)


def retrying(
    settings: RetrySettings,
    *,
    sleep: Callable[[float], None],
    on_retry: Callable[[BaseException, float], None],
    rng: random.Random | None = None,
) -> tenacity.Retrying:
    """A fresh tenacity ``Retrying`` for one logical request (its counters are per request)."""
    stop = _Stop(settings)
    wait = _Wait(settings, stop, rng or random.Random())

    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        if exc is not None:
            on_retry(exc, delay)

    return tenacity.Retrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception(is_retryable),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
