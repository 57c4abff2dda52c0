"""HTTP side of the simulator: OAuth, the five read endpoints, limits, faults, admin API.

One ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive) serves the login path, the API paths and
the ``/_simulator/`` admin paths. The standard library server gives us the raw socket, which a
"drop" fault needs (close the connection without any answer).

Two contracts share the host, the token endpoint, the rate limiter and the clock: the seed
contract (``/api/v2/predictive-engagement/...``, handled here) and the real Genesys journey
aggregates + action maps (``journey_aggregates.py``). For the latter, authorization is by the
client's Genesys permissions instead of scopes, responses carry only the real
``inin-ratelimit-*`` headers, and a 429 has the code ``too.many.requests.retry.after``.

Request pipeline for an API path: route (404/405) -> bearer token (401) -> injected fault ->
scopes or, for the journey contract, permissions (403) -> rate limit (429) -> latency -> handler
(200/202/204/400/404/413, or 429 for the per-client async job limit). Only requests that pass
the rate limit are counted (cost 1, or 2 for an on-the-fly window); 401/403/404-route/405 and
injected faults are not. Admin paths and the token endpoint are never counted.

Admin endpoints (JSON bodies or query parameters; not rate-limited, not logged):

* ``GET  /_simulator/health`` - ``{"ok", "url", "now"}``
* ``GET  /_simulator/clock``, ``POST /_simulator/clock`` ``{"now": iso, "frozen": bool, "advanceSeconds": n}``
* ``POST /_simulator/archive`` ``{"campaignId", "afterPages"}``
* ``POST /_simulator/retrain`` ``{"scorecardId"}`` - returns the Scorecard
* ``POST /_simulator/faults`` ``{"kind", "count", "pathContains", "retryAfter", "delay"}``;
  ``DELETE /_simulator/faults`` clears scripted faults
* ``POST /_simulator/revoke`` / ``POST /_simulator/expire`` ``{"clientId"}`` (optional)
* ``GET  /_simulator/requests?since=N`` - the request log as JSON records
* ``GET  /_simulator/campaigns``, ``/_simulator/scorecards``, ``/_simulator/roles``
* ``GET  /_simulator/expected-steps?campaignId=&day=YYYY-MM-DD``,
  ``GET /_simulator/expected-scorecard?scorecardId=&day=YYYY-MM-DD``
* ``GET  /_simulator/action-maps``, ``/_simulator/action-map-roles``, ``/_simulator/journey-jobs``,
  ``GET /_simulator/expected-action-map-funnel?actionMapId=&day=YYYY-MM-DD`` -> ``{"funnel"}``
  (``null``: no bucket that day)
* ``POST /_simulator/journey-faults`` ``{"kind", "count", "pathContains", "value", "afterPages"}``;
  ``DELETE /_simulator/journey-faults`` clears them
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from pe_dev.simulator import journey_aggregates
from pe_dev.simulator.config import (
    ANALYTICS_SCOPE,
    FAULT_KINDS,
    VIEW_SCOPE,
    WRITE_SCOPES,
    ClientSpec,
    SimulatorConfig,
)
from pe_dev.simulator.journey_aggregates import JourneyService
from pe_dev.simulator.predictive_engagement import World, day_start, iso_z

API_PREFIX = "/api/v2/predictive-engagement"
TOKEN_PATH = "/oauth/token"
ADMIN_PREFIX = "/_simulator/"
CAMPAIGN_STATUSES = ("active", "paused", "archived")


# ===================================================================== small helpers
class ApiError(Exception):
    """Raised by handlers; becomes an ErrorBody response."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class Reply:
    """A response to write (``body`` None means an empty body)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _Drop:
    """Marker: close the connection without answering."""


DROP = _Drop()


@dataclass
class RequestRecord:
    """One line of the request log. Never holds a secret or a token."""

    monotonic: float
    wall_time: str
    client_id: str | None
    method: str
    path: str
    query: str
    status: int | None
    fault: str | None
    counted: bool
    cost: int
    context_id: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class _Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float  # monotonic
    revoked: bool = False


@dataclass
class _ScriptedFault:
    kind: str
    remaining: int
    path_contains: str | None
    retry_after: int | None
    delay: float | None


class SimClock:
    """Business clock: frozen datetime, or real UTC plus an offset. Thread-safe."""

    def __init__(self, frozen: datetime | None = None, offset: timedelta = timedelta(0)) -> None:
        self._lock = threading.Lock()
        self._frozen = _aware(frozen) if frozen else None
        self._offset = offset

    def now(self) -> datetime:
        """The simulator's current UTC time."""
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return datetime.now(UTC) + self._offset

    def set_now(self, moment: datetime, frozen: bool = True) -> None:
        """Jump to ``moment``; frozen stays there, otherwise time runs on from it."""
        moment = _aware(moment)
        with self._lock:
            if frozen:
                self._frozen = moment
            else:
                self._frozen = None
                self._offset = moment - datetime.now(UTC)

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward (or back, for a negative delta)."""
        with self._lock:
            if self._frozen is not None:
                self._frozen += delta
            else:
                self._offset += delta

    @property
    def frozen(self) -> bool:
        """Whether the clock stands still."""
        with self._lock:
            return self._frozen is not None


def _aware(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class RateLimiter:
    """Fixed windows of ``window`` seconds on the monotonic clock, one counter per key."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}

    def _index(self, now: float) -> int:
        return int((now - self._t0) // self.window)

    def _used(self, key: str, index: int) -> int:
        idx, count = self._counts.get(key, (index, 0))
        return count if idx == index else 0

    def reset_in(self, now: float | None = None) -> float:
        """Seconds until the current window ends."""
        now = time.monotonic() if now is None else now
        return self._t0 + (self._index(now) + 1) * self.window - now

    def check(self, buckets: list[tuple[str, int]], cost: int) -> tuple[bool, dict[str, str], int]:
        """Consume ``cost`` from every bucket if all have room.

        Returns (allowed, rate headers, retry-after seconds). Headers describe the bucket with
        the least room left (the one that binds).
        """
        with self._lock:
            now = time.monotonic()
            index = self._index(now)
            used = {key: self._used(key, index) for key, _ in buckets}
            allowed = cost == 0 or all(used[key] + cost <= limit for key, limit in buckets)
            if allowed and cost:
                for key, _ in buckets:
                    self._counts[key] = (index, used[key] + cost)
                    used[key] += cost
            reset = self._t0 + (index + 1) * self.window - now
        key, limit = min(buckets, key=lambda kl: kl[1] - used[kl[0]])
        reset_whole = max(1, math.ceil(reset))
        remaining = max(0, limit - used[key])
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset_whole),
            "inin-ratelimit-count": str(used[key]),
            "inin-ratelimit-allowed": str(limit),
            "inin-ratelimit-reset": str(reset_whole),
        }
        return allowed, headers, reset_whole


class CursorCodec:
    """Opaque, tamper-evident cursors: base64url(JSON + truncated HMAC-SHA256)."""

    _SIG = 16

    def __init__(self, seed: int) -> None:
        # Derived from the seed so equal seeds give equal nextPageUris (determinism).
        self._key = hashlib.sha256(f"pe-simulator-cursor:{seed}".encode()).digest()

    def encode(self, payload: dict[str, Any]) -> str:
        """Sign and encode ``payload``."""
        raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        sig = hmac.new(self._key, raw, hashlib.sha256).digest()[: self._SIG]
        return base64.urlsafe_b64encode(raw + sig).rstrip(b"=").decode()

    def decode(self, token: str) -> dict[str, Any]:
        """Verify and decode; ValueError on any damage."""
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise ValueError("cursor is not base64") from exc
        raw, sig = blob[: -self._SIG], blob[-self._SIG :]
        good = hmac.new(self._key, raw, hashlib.sha256).digest()[: self._SIG]
        if len(blob) <= self._SIG or not hmac.compare_digest(sig, good):
            raise ValueError("cursor signature mismatch")
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("cursor payload is not an object")
        return payload


def parse_instant(name: str, value: str | None) -> datetime:
    """Parse an ISO 8601 date-time with an explicit offset (400 otherwise)."""
    if value is None or value == "":
        raise ApiError(400, "bad.request", f"{name} is required")
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ApiError(400, "bad.request", f"{name} is not an ISO 8601 date-time: {value!r}") from None
    if "T" not in value.upper() or moment.tzinfo is None:
        raise ApiError(400, "bad.request", f"{name} must be a date-time with a UTC offset, e.g. Z: {value!r}")
    return moment.astimezone(UTC)


def _is_midnight(moment: datetime) -> bool:
    return moment.hour == 0 and moment.minute == 0 and moment.second == 0 and moment.microsecond == 0


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "bad.request", f"{name} given more than once")
    return values[0]


def _int_param(query: dict[str, list[str]], name: str, default: int, lo: int, hi: int | None) -> int:
    raw = _one(query, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad.request", f"{name} must be an integer: {raw!r}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ApiError(400, "bad.request", f"{name} must be {bound}: {value}")
    return value


_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^{API_PREFIX}/campaigns$"), "listCampaigns"),
    (re.compile(rf"^{API_PREFIX}/campaigns/(?P<id>[^/]+)$"), "getCampaign"),
    (re.compile(rf"^{API_PREFIX}/campaigns/(?P<id>[^/]+)/analytics$"), "getCampaignAnalytics"),
    (re.compile(rf"^{API_PREFIX}/scorecards$"), "listScorecards"),
    (re.compile(rf"^{API_PREFIX}/scorecards/(?P<id>[^/]+)$"), "getScorecard"),
    (re.compile(rf"^{API_PREFIX}/scorecards/(?P<id>[^/]+)/analytics$"), "getScorecardAnalytics"),
]


# ===================================================================== the server
class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: SimulatorServer) -> None:
        self.sim = sim
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the owning SimulatorServer."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every response.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.sim._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.sim._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log (the request log replaces it)."""

    def _go(self) -> None:
        self.server.sim._serve(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _go


class SimulatorServer:
    """A running simulator: the HTTP server plus its world, clock, limits and faults.

    Use as a context manager (starts a background thread) or call ``start()``/``stop()``.
    """

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self.host = host
        self._requested_port = port
        self.world = World(self.config)
        self.clock = SimClock(self.config.frozen_now, self.config.clock_offset)
        self.limiter = RateLimiter(self.config.window_seconds)
        self.cursors = CursorCodec(self.config.seed)
        #: the journey-aggregates contract: action-map world, async jobs, its faults
        self.journey = JourneyService(self.config, self.clock.now, self.cursors)
        self.request_log: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._clients: dict[str, ClientSpec] = {c.client_id: c for c in self.config.clients}
        self._tokens: dict[str, _Token] = {}
        self._scripted: list[_ScriptedFault] = []
        fault_seed = self.config.seed if self.config.fault_seed is None else self.config.fault_seed
        self._fault_rng = random.Random(f"faults:{fault_seed}")
        self._perm_counter = 0
        self._archive_after: dict[str, int] = {}
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- lifecycle
    def start(self) -> SimulatorServer:
        """Bind and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="pe-simulator"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (sleeping faults wake up)."""
        self._stopping.set()
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ------------------------------------------------------------ properties
    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._httpd is None:
            raise RuntimeError("simulator is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the server (API, login and admin share it)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Base URL for the API paths."""
        return self.url

    @property
    def login_url(self) -> str:
        """Base URL for ``POST /oauth/token``."""
        return self.url

    @property
    def client_id(self) -> str:
        """The first configured client's id."""
        return self.config.clients[0].client_id

    @property
    def client_secret(self) -> str:
        """The first configured client's secret."""
        return self.config.clients[0].client_secret

    @property
    def roles(self) -> dict[str, str]:
        """Campaign ids by role: big, damaged, paused, archived, unscored."""
        return dict(self.world.roles)

    # ------------------------------------------------------------ control API
    def now(self) -> datetime:
        """The simulator's business now (UTC)."""
        return self.clock.now()

    def set_now(self, moment: datetime, frozen: bool = True) -> None:
        """Set the business clock (frozen by default)."""
        self.clock.set_now(moment, frozen)

    def advance(self, delta: timedelta) -> None:
        """Move the business clock."""
        self.clock.advance(delta)

    def archive_campaign(self, campaign_id: str, after_pages: int | None = None) -> None:
        """Archive now, or after ``after_pages`` more analytics pages were served for it."""
        if campaign_id not in self.world.campaigns:
            raise KeyError(campaign_id)
        with self._lock:
            if after_pages:
                self._archive_after[campaign_id] = after_pages
                return
            self._archive_after.pop(campaign_id, None)
        self.world.archive(campaign_id, self.clock.now())

    def retrain_scorecard(self, scorecard_id: str) -> dict[str, Any]:
        """Retrain: modelVersion + 1, lastRetrainedDate = now; returns the Scorecard."""
        if scorecard_id not in self.world.scorecards:
            raise KeyError(scorecard_id)
        return self.world.retrain(scorecard_id, self.clock.now()).to_json()

    def inject_fault(
        self,
        kind: str,
        count: int = 1,
        path_contains: str | None = None,
        retry_after: int | None = None,
        delay: float | None = None,
    ) -> None:
        """Apply ``kind`` to the next ``count`` matching requests.

        ``path_contains=None`` matches every API path (not the token or admin paths); a string
        matches any path containing it, including ``/oauth/token``.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        with self._lock:
            self._scripted.append(_ScriptedFault(kind, count, path_contains, retry_after, delay))

    def clear_faults(self) -> None:
        """Forget scripted faults not yet used."""
        with self._lock:
            self._scripted.clear()

    def revoke_tokens(self, client_id: str | None = None) -> int:
        """Revoke every token (of one client); returns how many."""
        with self._lock:
            hit = [t for t in self._tokens.values() if client_id is None or t.client_id == client_id]
            for tok in hit:
                tok.revoked = True
            return len(hit)

    def expire_tokens(self, client_id: str | None = None) -> int:
        """Make every token (of one client) expired now; returns how many."""
        with self._lock:
            hit = [t for t in self._tokens.values() if client_id is None or t.client_id == client_id]
            for tok in hit:
                tok.expires_at = time.monotonic() - 1
            return len(hit)

    def campaigns(self) -> list[dict[str, Any]]:
        """Current truth: every campaign in canonical order."""
        return self.world.campaign_list()

    def scorecards(self) -> list[dict[str, Any]]:
        """Current truth: every scorecard in canonical order."""
        return self.world.scorecard_list()

    def expected_steps(self, campaign_id: str, day: date) -> list[dict[str, Any]]:
        """Ground truth: the day's steps in canonical (served) order."""
        return self.world.expected_steps(campaign_id, day)

    def expected_metrics(self, campaign_id: str, day: date) -> dict[str, Any]:
        """Ground truth: the day's JourneyMetrics."""
        return dict(self.world.journey(campaign_id, day).metrics)

    def expected_scorecard(self, scorecard_id: str, day: date) -> dict[str, Any]:
        """What scorecard analytics for ``day`` would answer now."""
        start = day_start(day)
        return self.world.scorecard_analytics(scorecard_id, start, start + timedelta(days=1), self.clock.now())

    def log_records(self) -> list[dict[str, Any]]:
        """The request log as dicts."""
        with self._lock:
            return [r.to_dict() for r in self.request_log]

    def count_requests(self, path_contains: str, method: str | None = None) -> int:
        """How many logged requests hit a path containing ``path_contains`` (optionally one method)."""
        with self._lock:
            return sum(
                1
                for r in self.request_log
                if path_contains in r.path and (method is None or r.method == method.upper())
            )

    # ------------------------------------------------------------ journey aggregates control
    def action_maps(self) -> list[dict[str, Any]]:
        """Truth: every listed action map (ActionMap JSON) in canonical order."""
        return self.journey.world.action_maps()

    @property
    def action_map_roles(self) -> dict[str, str]:
        """Action-map ids by role: inactive, content_offer, architect_flow, sparse (+ legacy)."""
        return dict(self.journey.world.roles)

    def deleted_action_map_ids(self) -> list[str]:
        """Maps that are in aggregates but not in the listing (``n_deleted_action_maps``)."""
        return self.journey.world.deleted_ids()

    def expected_action_map_funnel(self, map_id: str, day: date) -> dict[str, int] | None:
        """Truth: the 11 funnel counts (zeros included) of one map and UTC day; None: no bucket.

        This is what a ``P1D``/UTC query for the 11 funnel metrics answers for that group and
        bucket once the day is over (absent metrics are the zeros).
        """
        return self.journey.expected_funnel(map_id, day)

    def expected_action_map_counts(self, map_id: str, day: date) -> dict[str, int] | None:
        """Truth: every non-zero metric of one map and UTC day (the funnel plus the extras)."""
        return self.journey.expected_counts(map_id, day)

    def journey_jobs(self) -> list[dict[str, Any]]:
        """Every async aggregate job with its owner and current status."""
        return self.journey.jobs()

    def inject_journey_fault(
        self,
        kind: str,
        count: int = 1,
        path_contains: str | None = None,
        value: Any = None,
        after_pages: int = 0,
    ) -> None:
        """Queue a bad-input fault of the journey contract (``config.JOURNEY_FAULT_KINDS``).

        Shape faults (``non_numeric_count``, ``bucket_outside_interval``, ``group_without_map_id``,
        ``unknown_metric``, ``unknown_field``) hit the next ``count`` non-empty sync answers or
        results pages (``unknown_field`` also listing pages); ``value`` replaces the injected
        value. ``repeating_cursor`` hits results pages. Job faults (``failed_job``, ``stuck_job``,
        ``expired_job`` - EXPIRED after ``after_pages`` result pages, 0: never readable) hit the
        next submitted jobs. ``path_contains`` narrows which requests qualify.
        """
        self.journey.inject(kind, count, path_contains, value, after_pages)

    def clear_journey_faults(self) -> None:
        """Forget journey faults not yet used."""
        self.journey.clear_faults()

    # ------------------------------------------------------------ dispatch
    def _serve(self, handler: _Handler) -> None:
        method = handler.command.upper()
        split = urlsplit(handler.path)
        path, raw_query = split.path, split.query
        query = parse_qs(raw_query, keep_blank_values=True)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        context_id = str(uuid.uuid4())
        started_mono, started_wall = time.monotonic(), datetime.now(UTC)
        info: dict[str, Any] = {"client_id": None, "fault": None, "cost": 0}
        try:
            if path.startswith(ADMIN_PREFIX):
                reply: Reply | _Drop = self._admin(method, path, query, body)
            elif path == TOKEN_PATH:
                raw_query = ""  # the token request must never leak credentials into the log
                reply = self._token_endpoint(method, handler, body, info)
            else:
                reply = self._api(method, path, query, handler, info, body)
        except ApiError as err:
            reply = self._error(err.status, err.code, err.message, context_id, err.headers)
        except Exception as exc:  # a simulator bug must still answer in the contract's shape
            reply = self._error(500, "internal.server.error", f"simulator error: {exc!r}", context_id)
        if isinstance(reply, Reply) and isinstance(reply.body, dict) and "contextId" in reply.body:
            reply.body["contextId"] = context_id
        if not path.startswith(ADMIN_PREFIX):
            record = RequestRecord(
                monotonic=started_mono,
                wall_time=iso_z(started_wall),
                client_id=info["client_id"],
                method=method,
                path=path,
                query=raw_query,
                status=reply.status if isinstance(reply, Reply) else None,
                fault=info["fault"],
                counted=info["cost"] > 0,
                cost=info["cost"],
                context_id=context_id,
            )
            self._log(record)
        if isinstance(reply, _Drop):
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(handler, reply, context_id, head=method == "HEAD")

    def _write(self, handler: _Handler, reply: Reply, context_id: str, head: bool = False) -> None:
        data = b"" if reply.body is None else json.dumps(reply.body, separators=(",", ":")).encode()
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("ININ-Correlation-Id", context_id)
            for key, value in reply.headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            if data and not head:
                handler.wfile.write(data)
        except OSError:
            handler.close_connection = True

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self.request_log.append(record)
            if self.config.request_log_path:
                with open(self.config.request_log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record.to_dict()) + "\n")

    @staticmethod
    def _error(status: int, code: str, message: str, context_id: str, headers: dict[str, str] | None = None) -> Reply:
        body = {"message": message, "code": code, "status": status, "contextId": context_id}
        return Reply(status, body, dict(headers or {}))

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    # ------------------------------------------------------------ OAuth
    def _token_endpoint(self, method: str, handler: _Handler, body: bytes, info: dict[str, Any]) -> Reply | _Drop:
        if method != "POST":
            raise ApiError(405, "method.not.allowed", f"{method} not allowed on {TOKEN_PATH}", {"Allow": "POST"})
        fault = self._take_scripted(TOKEN_PATH, api=False)
        if fault is not None:
            info["fault"] = fault.kind
            early = self._apply_fault(fault, None, {})
            if early is not None:
                return early

        def oauth_error(status: int, error: str, description: str) -> Reply:
            headers = {"Cache-Control": "no-store"}
            if error == "invalid_client":
                headers["WWW-Authenticate"] = 'Basic realm="pe-simulator"'
            # contextId is extra to OAuthError but lets a client log every failure the same way.
            return Reply(status, {"error": error, "description": description, "contextId": ""}, headers)

        ctype = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return oauth_error(400, "invalid_request", "body must be application/x-www-form-urlencoded")
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            return oauth_error(400, "invalid_request", "malformed form body")
        if any(len(v) > 1 for v in form.values()):
            return oauth_error(400, "invalid_request", "a parameter was given more than once")
        fields = {k: v[0] for k, v in form.items()}

        auth = handler.headers.get("Authorization")
        client_id = secret = None
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "basic":
                return oauth_error(401, "invalid_client", "only HTTP Basic client authentication is supported")
            try:
                client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return oauth_error(401, "invalid_client", "malformed Basic credentials")
            if not sep:
                return oauth_error(401, "invalid_client", "malformed Basic credentials")
            if "client_secret" in fields:
                return oauth_error(400, "invalid_request", "use one client authentication method, not two")
        else:
            client_id, secret = fields.get("client_id"), fields.get("client_secret")
            if not client_id or secret is None:
                return oauth_error(401, "invalid_client", "client credentials missing")
        grant = fields.get("grant_type")
        if not grant:
            return oauth_error(400, "invalid_request", "grant_type is required")
        if grant != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")
        client = self._clients.get(client_id or "")
        if client is None or not hmac.compare_digest(client.client_secret.encode(), (secret or "").encode()):
            return oauth_error(401, "invalid_client", "unknown client or wrong secret")
        info["client_id"] = client.client_id
        requested = fields.get("scope")
        if requested is None or not requested.strip():
            scopes = list(client.scopes)
        else:
            scopes = list(dict.fromkeys(requested.split()))
            extra = [s for s in scopes if s not in client.scopes]
            if extra:
                return oauth_error(400, "invalid_scope", f"scope not allowed for this client: {' '.join(extra)}")
        lifetime = self.config.token_lifetime
        token = secrets.token_urlsafe(32)
        with self._lock:
            # Drop long-dead tokens so the table stays small.
            now = time.monotonic()
            for key in [k for k, t in self._tokens.items() if t.expires_at < now - 3600]:
                del self._tokens[key]
            self._tokens[token] = _Token(client.client_id, frozenset(scopes), now + lifetime)
        body_out = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": max(1, round(lifetime)),
            "scope": " ".join(scopes),
        }
        return Reply(200, body_out, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    # ------------------------------------------------------------ API pipeline
    def _api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        handler: _Handler,
        info: dict[str, Any],
        body: bytes = b"",
    ) -> Reply | _Drop:
        token = self._bearer(handler)
        tok_info = self._tokens.get(token) if token else None
        peek_buckets = self._buckets(tok_info) if tok_info else [("org", self.config.org_limit)]

        op, params, allowed_methods = None, {}, ("GET",)
        for pattern, name in _ROUTES:
            match = pattern.match(path)
            if match:
                op, params = name, match.groupdict()
                break
        journey = journey_aggregates.match_route(path) if op is None else None
        if journey is not None:
            op, params, allowed_methods = journey

        def fit(headers: dict[str, str]) -> dict[str, str]:
            # The real Genesys endpoints send only the inin-ratelimit-* set.
            return {k: v for k, v in headers.items() if not k.startswith("X-RateLimit-")} if journey else headers

        def headers_now() -> dict[str, str]:
            return fit(self.limiter.check(peek_buckets, 0)[1])

        if op is None:
            raise ApiError(404, "not.found", f"no such resource: {path}", headers_now())
        if method not in allowed_methods:
            hdrs = headers_now() | {"Allow": ", ".join(allowed_methods)}
            raise ApiError(405, "method.not.allowed", f"{method} is not allowed on {path}", hdrs)

        if token is None:
            hdrs = headers_now() | {"WWW-Authenticate": "Bearer"}
            raise ApiError(401, "authentication.required", "no bearer token", hdrs)
        if tok_info is None or tok_info.revoked or tok_info.expires_at <= time.monotonic():
            why = "unknown token" if tok_info is None else ("token revoked" if tok_info.revoked else "token expired")
            if tok_info is not None:
                info["client_id"] = tok_info.client_id
            hdrs = headers_now() | {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            raise ApiError(401, "bad.credentials", f"invalid bearer token: {why}", hdrs)
        info["client_id"] = tok_info.client_id

        fault = self._take_scripted(path, api=True) or self._random_fault()
        if fault is not None:
            info["fault"] = fault.kind
            early = self._apply_fault(fault, token, headers_now(), journey=journey is not None)
            if early is not None:
                return early

        if journey is not None:
            # Genesys authorizes by the permissions of the client's roles, not by token scopes.
            permission = journey_aggregates.required_permission(op)
            client = self._clients.get(tok_info.client_id)
            if client is None or permission not in client.permissions:
                return Reply(403, journey_aggregates.permission_error(permission), headers_now())
        else:
            needed = [VIEW_SCOPE] + ([ANALYTICS_SCOPE] if op.endswith("Analytics") else [])
            missing = [s for s in needed if s not in tok_info.scopes]
            if missing:
                raise ApiError(403, "missing.any.permissions", f"missing scope(s): {' '.join(missing)}", headers_now())

        cost = 1 if journey is not None else self._cost(op, query)
        allowed, rate_headers, retry_after = self.limiter.check(peek_buckets, cost)
        rate_headers = fit(rate_headers)
        if not allowed:
            if journey is not None:
                return Reply(
                    429,
                    journey_aggregates.rate_limited_error(retry_after),
                    rate_headers | {"Retry-After": str(retry_after)},
                )
            raise ApiError(
                429,
                "too.many.requests",
                f"rate limit exceeded; retry after {retry_after} s",
                rate_headers | {"Retry-After": str(retry_after)},
            )
        info["cost"] = cost
        self._sleep(self.config.latency + (self.config.onfly_latency if cost > 1 else 0.0))
        if journey is not None:
            status, answer, extra = self.journey.handle(method, op, params, query, body, tok_info.client_id, path)
            return Reply(status, answer, rate_headers | extra)
        handler_fn: Callable[[str, dict[str, list[str]]], Any] = getattr(self, f"_op_{op}")
        try:
            answer = handler_fn(params.get("id", ""), query)
        except ApiError as err:
            err.headers = rate_headers | err.headers
            raise
        return Reply(200, answer, rate_headers)

    @staticmethod
    def _bearer(handler: _Handler) -> str | None:
        auth = handler.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return value.strip()

    def _buckets(self, tok: _Token) -> list[tuple[str, int]]:
        limit = self.config.client_limit
        if tok.scopes & set(WRITE_SCOPES):
            limit = max(1, limit // max(1, self.config.write_limit_divisor))
        return [(f"client:{tok.client_id}", limit), ("org", self.config.org_limit)]

    def _cost(self, op: str, query: dict[str, list[str]]) -> int:
        """1, or ``onfly_cost`` for a campaign window that is not exactly one UTC day."""
        if op != "getCampaignAnalytics":
            return 1
        raw_from, raw_to = (query.get("dateFrom") or [None])[0], (query.get("dateTo") or [None])[0]
        cursor = (query.get("cursor") or [None])[0]
        if cursor:
            with contextlib.suppress(ValueError):
                payload = self.cursors.decode(cursor)
                raw_from, raw_to = payload.get("f"), payload.get("t")
        try:
            start, end = parse_instant("dateFrom", raw_from), parse_instant("dateTo", raw_to)
        except ApiError:
            return 1
        if _is_midnight(start) and end - start == timedelta(days=1):
            return 1
        return max(1, self.config.onfly_cost)

    # ------------------------------------------------------------ faults
    def _take_scripted(self, path: str, api: bool) -> _ScriptedFault | None:
        with self._lock:
            for fault in self._scripted:
                if fault.path_contains is None and not api:
                    continue
                if fault.path_contains is not None and fault.path_contains not in path:
                    continue
                if fault.kind == "revoke" and not api:
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._scripted.remove(fault)
                return fault
        return None

    def _random_fault(self) -> _ScriptedFault | None:
        if self.config.fault_rate <= 0 or not self.config.fault_kinds:
            return None
        with self._lock:
            if self._fault_rng.random() >= self.config.fault_rate:
                return None
            kind = self._fault_rng.choice(list(self.config.fault_kinds))
        return _ScriptedFault(kind, 1, None, None, None)

    def _apply_fault(
        self, fault: _ScriptedFault, token: str | None, rate_headers: dict[str, str], journey: bool = False
    ) -> Reply | _Drop | None:
        """Answer for the fault, or None to carry on (after a "slow" delay)."""
        if fault.kind == "drop":
            return DROP
        if fault.kind == "slow":
            self._sleep(self.config.slow_seconds if fault.delay is None else fault.delay)
            return None
        if fault.kind == "5xx":
            return Reply(
                503,
                {
                    "message": "service temporarily unavailable (injected)",
                    "code": "service.unavailable",
                    "status": 503,
                    "contextId": "",
                },
                rate_headers,
            )
        if fault.kind == "429":
            retry = max(1, fault.retry_after or self.config.fault_retry_after)
            if journey:
                body = journey_aggregates.rate_limited_error(retry)
                return Reply(429, body, rate_headers | {"Retry-After": str(retry)})
            return Reply(
                429,
                {
                    "message": f"rate limit exceeded; retry after {retry} s",
                    "code": "too.many.requests",
                    "status": 429,
                    "contextId": "",
                },
                rate_headers | {"Retry-After": str(retry)},
            )
        # revoke: the caller's token dies; this very call already sees it
        with self._lock:
            if token and token in self._tokens:
                self._tokens[token].revoked = True
        return Reply(
            401,
            {
                "message": "invalid bearer token: token revoked",
                "code": "bad.credentials",
                "status": 401,
                "contextId": "",
            },
            rate_headers | {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    # ------------------------------------------------------------ pagination
    def _page(
        self,
        items: list[Any],
        query: dict[str, list[str]],
        cursor_payload: dict[str, Any] | None,
        size: int,
        page_number: int,
    ) -> tuple[list[Any], int, int | None]:
        """Slice one page. Returns (page items, pageNumber, next offset or None).

        With a cursor, or on page 1, the canonical order is used. A later page asked for by
        number alone comes from a fresh permutation each time (the contract's instability).
        """
        if cursor_payload is not None:
            offset = int(cursor_payload["o"])
            page = items[offset : offset + size]
            number = offset // size + 1
        else:
            offset = (page_number - 1) * size
            number = page_number
            if page_number == 1:
                page = items[:size]
            else:
                with self._lock:
                    self._perm_counter += 1
                    counter = self._perm_counter
                order = list(range(len(items)))
                random.Random(f"{self.config.seed}:perm:{counter}").shuffle(order)
                page = [items[i] for i in order[offset : offset + size]]
        nxt = offset + size if offset + size < len(items) else None
        return page, number, nxt

    def _cursor(self, query: dict[str, list[str]], kind: str, ref: str) -> dict[str, Any] | None:
        raw = _one(query, "cursor")
        if raw is None:
            return None
        try:
            payload = self.cursors.decode(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad.request", "invalid cursor") from None
        if payload.get("k") != kind or payload.get("r") != ref or not isinstance(payload.get("o"), int):
            raise ApiError(400, "bad.request", "cursor does not belong to this request")
        return payload

    @staticmethod
    def _uri(path: str, pairs: list[tuple[str, str]]) -> str:
        return f"{path}?{urlencode(pairs)}"

    # ------------------------------------------------------------ operations
    def _listing(
        self,
        kind: str,
        path: str,
        items: list[Any],
        query: dict[str, list[str]],
        extra_pairs: list[tuple[str, str]],
        ref: str,
    ) -> dict[str, Any]:
        cursor = self._cursor(query, kind, ref)
        size = _int_param(query, "pageSize", 25, 1, 100)
        number = _int_param(query, "pageNumber", 1, 1, None)
        if cursor is not None:
            if _one(query, "pageSize") is not None and size != cursor["n"]:
                raise ApiError(400, "bad.request", "pageSize does not match the cursor")
            size = int(cursor["n"])
        page, number, nxt = self._page(items, query, cursor, size, number)
        next_uri = None
        if nxt is not None:
            token = self.cursors.encode({"k": kind, "r": ref, "o": nxt, "n": size})
            next_uri = self._uri(
                path,
                [
                    *extra_pairs,
                    ("pageSize", str(size)),
                    ("pageNumber", str(nxt // size + 1)),
                    ("cursor", token),
                ],
            )
        return {
            "entities": page,
            "pageSize": size,
            "pageNumber": number,
            "total": len(items),
            "pageCount": math.ceil(len(items) / size),
            "nextPageUri": next_uri,
        }

    def _op_listCampaigns(self, _id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        statuses = query.get("status", [])
        bad = [s for s in statuses if s not in CAMPAIGN_STATUSES]
        if bad:
            raise ApiError(400, "bad.request", f"unknown status {bad[0]!r}; expected one of {CAMPAIGN_STATUSES}")
        wanted = sorted(set(statuses))
        items = [c for c in self.world.campaign_list() if not wanted or c["status"] in wanted]
        # The filter is part of the cursor's identity: a cursor can't be replayed with another filter.
        return self._listing(
            "campaigns",
            f"{API_PREFIX}/campaigns",
            items,
            query,
            [("status", s) for s in wanted],
            ",".join(wanted),
        )

    def _op_listScorecards(self, _id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        return self._listing("scorecards", f"{API_PREFIX}/scorecards", self.world.scorecard_list(), query, [], "")

    def _op_getCampaign(self, campaign_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        with self.world.lock:
            camp = self.world.campaigns.get(campaign_id)
            if camp is None:
                raise ApiError(404, "not.found", f"campaign {campaign_id} not found")
            return camp.to_json()

    def _op_getScorecard(self, scorecard_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        with self.world.lock:
            sc = self.world.scorecards.get(scorecard_id)
            if sc is None:
                raise ApiError(404, "not.found", f"scorecard {scorecard_id} not found")
            return sc.to_json()

    def _window(self, query: dict[str, list[str]], cursor: dict[str, Any] | None) -> tuple[datetime, datetime]:
        raw_from, raw_to = _one(query, "dateFrom"), _one(query, "dateTo")
        if cursor is not None:
            start, end = parse_instant("dateFrom", cursor["f"]), parse_instant("dateTo", cursor["t"])
            if raw_from is not None and parse_instant("dateFrom", raw_from) != start:
                raise ApiError(400, "bad.request", "dateFrom does not match the cursor")
            if raw_to is not None and parse_instant("dateTo", raw_to) != end:
                raise ApiError(400, "bad.request", "dateTo does not match the cursor")
        else:
            start, end = parse_instant("dateFrom", raw_from), parse_instant("dateTo", raw_to)
        if start >= end:
            raise ApiError(400, "bad.request", "dateFrom must be before dateTo")
        if end - start > timedelta(days=self.config.max_window_days):
            raise ApiError(400, "bad.request", f"window longer than {self.config.max_window_days} days")
        now = self.clock.now()
        if end > now:
            raise ApiError(
                400,
                "bad.request",
                f"the window ending {iso_z(end)} is not complete yet (now is {iso_z(now)}); "
                "analytics are available once the UTC day is complete",
            )
        return start, end

    def _op_getCampaignAnalytics(self, campaign_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        cursor = self._cursor(query, "journey", campaign_id)
        group_by = _one(query, "groupBy")
        if group_by is None and cursor is None:
            raise ApiError(400, "bad.request", "groupBy is required (groupBy=step)")
        if group_by is not None and group_by != "step":
            raise ApiError(400, "bad.request", f"groupBy must be 'step', not {group_by!r}")
        start, end = self._window(query, cursor)
        size = _int_param(query, "pageSize", 100, 1, 1000)
        number = _int_param(query, "pageNumber", 1, 1, None)
        if cursor is not None:
            if _one(query, "pageSize") is not None and size != cursor["n"]:
                raise ApiError(400, "bad.request", "pageSize does not match the cursor")
            size = int(cursor["n"])
        with self.world.lock:
            camp = self.world.campaigns.get(campaign_id)
            if camp is None:
                raise ApiError(404, "not.found", f"campaign {campaign_id} not found")
            if camp.status == "archived":
                raise ApiError(404, "not.found", f"campaign {campaign_id} is archived; its analytics are gone")
        if _is_midnight(start) and end - start == timedelta(days=1):
            journey = self.world.journey(campaign_id, start.date())
        else:
            journey = self.world.window_journey(campaign_id, start, end)
        page, number, nxt = self._page(journey.steps, query, cursor, size, number)
        next_uri = None
        if nxt is not None:
            token = self.cursors.encode(
                {"k": "journey", "r": campaign_id, "f": iso_z(start), "t": iso_z(end), "o": nxt, "n": size}
            )
            next_uri = self._uri(
                f"{API_PREFIX}/campaigns/{campaign_id}/analytics",
                [
                    ("dateFrom", iso_z(start)),
                    ("dateTo", iso_z(end)),
                    ("groupBy", "step"),
                    ("pageSize", str(size)),
                    ("pageNumber", str(nxt // size + 1)),
                    ("cursor", token),
                ],
            )
        self._count_archive_page(campaign_id)
        return {
            "campaignId": campaign_id,
            "dateFrom": iso_z(start),
            "dateTo": iso_z(end),
            "metrics": dict(journey.metrics),
            "steps": page,
            "pageSize": size,
            "pageNumber": number,
            "nextPageUri": next_uri,
        }

    def _count_archive_page(self, campaign_id: str) -> None:
        with self._lock:
            left = self._archive_after.get(campaign_id)
            if left is None:
                return
            left -= 1
            if left > 0:
                self._archive_after[campaign_id] = left
                return
            del self._archive_after[campaign_id]
        self.world.archive(campaign_id, self.clock.now())

    def _op_getScorecardAnalytics(self, scorecard_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        metric = _one(query, "metric")
        if metric is None:
            raise ApiError(400, "bad.request", "metric is required (metric=performance)")
        if metric != "performance":
            raise ApiError(400, "bad.request", f"metric must be 'performance', not {metric!r}")
        start, end = self._window(query, None)
        if not (_is_midnight(start) and _is_midnight(end)):
            raise ApiError(400, "bad.request", "scorecard analytics need whole UTC days: dateFrom/dateTo at 00:00Z")
        if scorecard_id not in self.world.scorecards:
            raise ApiError(404, "not.found", f"scorecard {scorecard_id} not found")
        return self.world.scorecard_analytics(scorecard_id, start, end, self.clock.now())

    # ------------------------------------------------------------ admin
    def _admin(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Reply:
        name = path[len(ADMIN_PREFIX) :].strip("/")
        try:
            data: dict[str, Any] = json.loads(body) if body.strip() else {}
        except json.JSONDecodeError:
            return Reply(400, {"error": "body is not JSON"})
        if not isinstance(data, dict):
            return Reply(400, {"error": "body must be a JSON object"})

        def arg(key: str) -> Any:
            if key in data:
                return data[key]
            values = query.get(key)
            return values[0] if values else None

        try:
            if name == "health" and method == "GET":
                return Reply(200, {"ok": True, "url": self.url, "now": iso_z(self.now())})
            if name == "clock" and method == "GET":
                return Reply(200, {"now": iso_z(self.now()), "frozen": self.clock.frozen})
            if name == "clock" and method == "POST":
                if arg("now") is not None:
                    moment = datetime.fromisoformat(str(arg("now")).replace("z", "Z"))
                    frozen = arg("frozen")
                    self.set_now(moment, frozen=True if frozen is None else bool(frozen))
                if arg("advanceSeconds") is not None:
                    self.advance(timedelta(seconds=float(arg("advanceSeconds"))))
                return Reply(200, {"now": iso_z(self.now()), "frozen": self.clock.frozen})
            if name == "archive" and method == "POST":
                after = arg("afterPages")
                self.archive_campaign(str(arg("campaignId")), int(after) if after is not None else None)
                return Reply(200, {"ok": True})
            if name == "retrain" and method == "POST":
                return Reply(200, self.retrain_scorecard(str(arg("scorecardId"))))
            if name == "faults" and method == "POST":
                retry = arg("retryAfter")
                delay = arg("delay")
                self.inject_fault(
                    str(arg("kind")),
                    count=int(arg("count") or 1),
                    path_contains=arg("pathContains"),
                    retry_after=int(retry) if retry is not None else None,
                    delay=float(delay) if delay is not None else None,
                )
                return Reply(200, {"ok": True})
            if name == "faults" and method == "DELETE":
                self.clear_faults()
                return Reply(200, {"ok": True})
            if name == "revoke" and method == "POST":
                return Reply(200, {"revoked": self.revoke_tokens(arg("clientId"))})
            if name == "expire" and method == "POST":
                return Reply(200, {"expired": self.expire_tokens(arg("clientId"))})
            if name == "requests" and method == "GET":
                since = int(arg("since") or 0)
                return Reply(200, self.log_records()[since:])
            if name == "campaigns" and method == "GET":
                return Reply(200, self.campaigns())
            if name == "scorecards" and method == "GET":
                return Reply(200, self.scorecards())
            if name == "roles" and method == "GET":
                return Reply(200, self.roles)
            if name == "expected-steps" and method == "GET":
                day = date.fromisoformat(str(arg("day")))
                return Reply(200, self.expected_steps(str(arg("campaignId")), day))
            if name == "expected-scorecard" and method == "GET":
                day = date.fromisoformat(str(arg("day")))
                return Reply(200, self.expected_scorecard(str(arg("scorecardId")), day))
            if name == "action-maps" and method == "GET":
                return Reply(200, self.action_maps())
            if name == "action-map-roles" and method == "GET":
                return Reply(200, self.action_map_roles)
            if name == "journey-jobs" and method == "GET":
                return Reply(200, self.journey_jobs())
            if name == "expected-action-map-funnel" and method == "GET":
                day = date.fromisoformat(str(arg("day")))
                # Wrapped: a bare JSON null would be an empty body here.
                return Reply(200, {"funnel": self.expected_action_map_funnel(str(arg("actionMapId")), day)})
            if name == "journey-faults" and method == "POST":
                self.inject_journey_fault(
                    str(arg("kind")),
                    count=int(arg("count") or 1),
                    path_contains=arg("pathContains"),
                    value=arg("value"),
                    after_pages=int(arg("afterPages") or 0),
                )
                return Reply(200, {"ok": True})
            if name == "journey-faults" and method == "DELETE":
                self.clear_journey_faults()
                return Reply(200, {"ok": True})
        except KeyError as exc:
            return Reply(404, {"error": f"unknown id {exc}"})
        except (TypeError, ValueError) as exc:
            return Reply(400, {"error": str(exc)})
        return Reply(404, {"error": f"no admin endpoint {method} {path}"})
