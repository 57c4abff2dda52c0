"""OAuth client-credentials tokens: least-privilege scopes, caching, one renewal at a time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import ApiError, AuthenticationError, ClientConfigError, PayloadError
from .http import RetrySettings, connection_error, error_for_status, parse_json, retrying

log = logging.getLogger("pe_assets.client")

#: The only scopes the client asks for: reading campaigns/scorecards and their analytics.
READ_SCOPES: tuple[str, ...] = ("predictive-engagement:view", "predictive-engagement:analytics:view")

#: Renew this many seconds before a token expires (the guide's ``expires_in - 120``).
RENEW_MARGIN_SECONDS = 120.0

_WRITE_ACTIONS = frozenset({"edit", "add", "delete", "write", "create", "update", "admin", "*", "all"})


def is_write_scope(scope: str) -> bool:
    """True for scopes that can change anything (``...:edit`` and friends, wildcards)."""
    action = scope.rsplit(":", 1)[-1].strip().lower()
    return action in _WRITE_ACTIONS or "*" in scope


def check_requested_scopes(
    scopes: Sequence[str], allowed: Sequence[str] = READ_SCOPES, *, allow_none: bool = False
) -> tuple[str, ...]:
    """Refuse write scopes and anything beyond ``allowed`` (least privilege).

    ``allow_none``: an empty request is fine (Genesys authorizes a client-credentials token by
    its role's permissions, so the real API needs no scope at all).
    """
    requested = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    writes = [s for s in requested if is_write_scope(s)]
    if writes:
        raise ClientConfigError(
            f"write scope(s) {writes} refused: the extraction client must be read-only (allowed: {list(allowed)})"
        )
    extra = [s for s in requested if s not in allowed]
    if extra:
        raise ClientConfigError(f"scope(s) {extra} not needed; allowed: {list(allowed)}")
    if not requested and not allow_none:
        raise ClientConfigError(f"no scope requested; use {list(allowed)}")
    return requested


@dataclass(frozen=True)
class OAuthCredentials:
    """A client-credentials OAuth client. The secret never shows in ``repr``/``str``."""

    client_id: str
    client_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.client_id or not self.client_secret:
            raise ClientConfigError("OAuthCredentials need a non-empty client_id and client_secret")


class _Token:
    """A bearer token with its renewal and expiry instants; the value stays out of reprs."""

    __slots__ = ("expires_at", "renew_at", "value")

    def __init__(self, value: str, renew_at: float, expires_at: float) -> None:
        self.value, self.renew_at, self.expires_at = value, renew_at, expires_at

    def __repr__(self) -> str:
        return f"_Token(renew_at={self.renew_at:.0f}, expires_at={self.expires_at:.0f})"


class TokenProvider:
    """Fetches and caches the bearer token of one OAuth client.

    Thread-safe: concurrent callers share one token, and a renewal happens once under a lock while
    the others wait for it. Renewal is due ``expires_in - 120`` s after issue (for lifetimes of 240 s
    or less, at half the lifetime, so a short-lived token is not renewed on every call).
    """

    TOKEN_PATH = "/oauth/token"

    def __init__(
        self,
        http: httpx.Client,
        login_url: str,
        credentials: OAuthCredentials,
        scopes: Sequence[str],
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        retry: RetrySettings,
        max_retry_after: float,
        on_request: Callable[[], None],
    ) -> None:
        self._http = http
        self._url = login_url + self.TOKEN_PATH
        self._credentials = credentials
        self._scopes = tuple(scopes)
        self._clock = clock
        self._sleep = sleep
        self._retry = retry
        self._max_retry_after = max_retry_after
        self._on_request = on_request
        self._lock = threading.Lock()
        self._token: _Token | None = None

    def __repr__(self) -> str:
        return f"TokenProvider(client_id={self._credentials.client_id!r})"

    def get(self) -> str:
        """A valid bearer token, renewing it first when due."""
        with self._lock:
            token = self._token
            now = self._clock()
            if token is not None and now < token.renew_at:
                return token.value
            try:
                self._token = self._fetch()
            except (ApiError, PayloadError) as exc:
                # A failed renewal while the old token still has life left is not fatal: keep it,
                # try again a little later (bounded by its real expiry).
                if token is not None and now < token.expires_at - 5:
                    log.warning("token renewal failed, keeping the current token: %s", exc)
                    token.renew_at = min(token.expires_at - 5, now + min(30.0, (token.expires_at - now) / 4))
                    return token.value
                raise
            return self._token.value

    def invalidate(self, value: str) -> None:
        """Forget ``value`` (the API answered 401 to it). A no-op if it was already replaced, so
        many threads hitting the same 401 cause a single renewal."""
        with self._lock:
            if self._token is not None and self._token.value == value:
                self._token = None

    # -- fetching -------------------------------------------------------------------------------
    def _fetch(self) -> _Token:
        def on_retry(exc: BaseException, delay: float) -> None:
            log.warning("token request failed, retrying in %.1fs: %s", delay, exc)

        return retrying(self._retry, sleep=self._sleep, on_retry=on_retry)(self._fetch_once)

    def _fetch_once(self) -> _Token:
        endpoint = f"POST {self.TOKEN_PATH}"
        issued = self._clock()  # before sending: the token cannot be older than this
        self._on_request()
        form = {"grant_type": "client_credentials"}
        if self._scopes:  # no scope at all when none is asked (Genesys: the role's permissions rule)
            form["scope"] = " ".join(self._scopes)
        try:
            response = self._http.post(
                self._url,
                auth=httpx.BasicAuth(self._credentials.client_id, self._credentials.client_secret),
                data=form,
                headers={"Accept": "application/json"},
            )
        except httpx.TransportError as exc:
            raise connection_error("POST", self.TOKEN_PATH, exc) from None
        if response.status_code in (400, 401):
            err = error_for_status("POST", self.TOKEN_PATH, response, max_retry_after=self._max_retry_after)
            raise AuthenticationError(
                "POST",
                self.TOKEN_PATH,
                response.status_code,
                f"token request refused for client {self._credentials.client_id!r}: {err.detail}",
                context_id=err.context_id,
                code=err.code,
                retryable=False,
            )
        if response.status_code != 200:
            raise error_for_status("POST", self.TOKEN_PATH, response, max_retry_after=self._max_retry_after)
        return self._parse(parse_json(response, endpoint), endpoint, response.status_code, issued)

    def _parse(self, body: Any, endpoint: str, status: int, issued: float) -> _Token:
        def bad(detail: str) -> PayloadError:
            return PayloadError(endpoint, detail, status=status)

        if not isinstance(body, dict):
            raise bad("token response is not a JSON object")
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise bad("token response has no access_token")
        token_type = body.get("token_type", "bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise bad(f"token_type {token_type!r} is not bearer")
        # Decision: expires_in is required by the contract; guessing a lifetime would either renew
        # needlessly or send expired tokens, so its absence is a PayloadError.
        expires_in = body.get("expires_in")
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or expires_in <= 0:
            raise bad(f"token response has no positive expires_in (got {expires_in!r})")
        granted = body.get("scope")
        if granted is not None:
            if not isinstance(granted, str):
                raise bad("token scope is not a string")
            scopes = granted.replace(",", " ").split()
            writes = [s for s in scopes if is_write_scope(s)]
            if writes:
                raise ClientConfigError(
                    f"OAuth client {self._credentials.client_id!r} was granted write scope(s) {writes}; "
                    "refusing the token: give the extraction a read-only OAuth client"
                )
            missing = [s for s in self._scopes if s not in scopes]
            if missing:
                raise ClientConfigError(f"OAuth client {self._credentials.client_id!r} was not granted {missing}")
        lifetime = float(expires_in)
        renew_after = lifetime - RENEW_MARGIN_SECONDS if lifetime > 2 * RENEW_MARGIN_SECONDS else lifetime / 2
        return _Token(value, renew_at=issued + renew_after, expires_at=issued + lifetime)
