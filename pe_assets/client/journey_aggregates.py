"""Client of the real Genesys Cloud journey endpoints: action maps and journey aggregates.

``GET /api/v2/journey/actionmaps`` (page-number listing), ``POST
/api/v2/analytics/journeys/aggregates/query`` (sync, one query per <= 31-day chunk) and the async
``.../aggregates/jobs`` family (for a 413 or long ranges). Tokens, the shared rate budget, retries
and the transport are ``ApiClientBase``'s, the same as the seed client's.

Pure helpers (no I/O) chunk a date range, format intervals, build the query body, validate a
response into per-(action map, UTC day) counts, and list unknown fields (schema drift).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

import httpx

from .auth import OAuthCredentials
from .base import ApiClientBase, Params
from .errors import (
    ApiError,
    AsyncJobError,
    ClientConfigError,
    NotFoundError,
    PaginationError,
    PayloadError,
    PredictiveEngagementError,
    QueryCancelledError,
)
from .http import context_id

log = logging.getLogger("pe_assets.client")

AGGREGATES_QUERY_PATH = "/api/v2/analytics/journeys/aggregates/query"
AGGREGATES_JOBS_PATH = "/api/v2/analytics/journeys/aggregates/jobs"
ACTION_MAPS_PATH = "/api/v2/journey/actionmaps"

#: Genesys authorizes by permission (the OAuth client's role), not by scope.
AGGREGATES_PERMISSION = "analytics:journeyAggregate:view"
ACTION_MAPS_PERMISSION = "journey:actionmap:view"
REQUIRED_PERMISSIONS: tuple[str, ...] = (AGGREGATES_PERMISSION, ACTION_MAPS_PERMISSION)

#: Read-only OAuth scopes that exist for these APIs; a client-credentials token needs none.
JOURNEY_READ_SCOPES: tuple[str, ...] = ("analytics:readonly", "journey:readonly")

#: The funnel's 11 metrics in the canonical step order (JOURNEY_AGGREGATES.md section 6.1).
FUNNEL_METRICS: tuple[str, ...] = (
    "nWebActionsQualified",
    "nWebActionsOffered",
    "nWebActionsAccepted",
    "nWebActionsStarted",
    "nWebActionsEngaged",
    "nJourneyActionsBlocked",
    "nWebActionsRejected",
    "nWebActionsIgnored",
    "nWebActionsTimedout",
    "nWebActionsAbandoned",
    "nWebActionsErrored",
)
#: Every metric of the .NET SDK 270.0.0 enum: anything else in an answer is schema drift.
KNOWN_METRICS: frozenset[str] = frozenset(
    {
        *FUNNEL_METRICS,
        "nDistinctJourneyActions",
        "nDistinctJourneySessions",
        "nJourneyOutcomesAchieved",
        "nJourneyOutcomesAttributed",
        "nJourneySegmentsAssigned",
        "nJourneySessions",
        "nWebActionsFrequencyCapReached",
        "nWebActionsOfferedOutsideSchedule",
        "nWebActionsQualifiedOutsideSchedule",
        "oJourneyOutcomeTouchpointValue",
        "oJourneyOutcomeValue",
    }
)
GROUP_DIMENSION = "journeyActionMapId"

#: Sync (and async) queries never span more days than this (a contract choice until verified).
MAX_QUERY_DAYS = 31
#: Page size of the action-map listing (Terraform pages with 100; the simulator's maximum).
ACTION_MAP_PAGE_SIZE = 100
#: Results per async page (the real default and maximum are unknown; the simulator's default).
ASYNC_PAGE_SIZE = 100
JOB_STATES = frozenset({"QUEUED", "PENDING", "FAILED", "CANCELLED", "FULFILLED", "EXPIRED"})
#: Job states that give no results: the job is resubmitted once.
_JOB_DEAD_STATES = frozenset({"FAILED", "EXPIRED", "CANCELLED"})

# Fields the client knows at each level of an aggregate answer (for the drift report only).
_KNOWN_TOP = frozenset({"results", "cursor"})
_KNOWN_CONTAINER = frozenset({"group", "data"})
_KNOWN_BUCKET = frozenset({"interval", "metrics", "views"})
_KNOWN_METRIC = frozenset({"metric", "qualifier", "stats"})
_KNOWN_STATS = frozenset(
    {
        "max",
        "min",
        "count",
        "countNegative",
        "countPositive",
        "sum",
        "current",
        "ratio",
        "numerator",
        "denominator",
        "target",
        "p95",
        "p99",
        "calculatedMetricValue",
    }
)

#: Counts per (action map id, UTC day): metric name -> count, every asked metric present.
FunnelCounts = dict[tuple[str, date], dict[str, int]]


# -- pure helpers ------------------------------------------------------------------------------------
def as_day(value: date | datetime, what: str = "day") -> date:
    """A UTC day from a ``date`` or from a ``datetime`` at UTC midnight (a Dagster time window)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ClientConfigError(f"{what} {value!r} has no time zone; give a date or an aware datetime")
        moment = value.astimezone(UTC)
        if moment.time() != datetime.min.time():
            raise ClientConfigError(f"{what} {value.isoformat()} is not a UTC midnight")
        return moment.date()
    if isinstance(value, date):
        return value
    raise ClientConfigError(f"{what} must be a date, got {value!r}")


def chunk_days(start: date, end: date, max_days: int = MAX_QUERY_DAYS) -> list[tuple[date, date]]:
    """Split the UTC days ``[start, end)`` into consecutive ``[chunk_start, chunk_end)`` of at most
    ``max_days`` days (40 days -> 31 + 9). ``end`` is the day after the last day."""
    if max_days < 1:
        raise ClientConfigError(f"max_days must be at least 1, got {max_days!r}")
    if end <= start:
        raise ClientConfigError(f"empty range: end {end} is not after start {start}")
    chunks: list[tuple[date, date]] = []
    cursor = start
    while cursor < end:
        chunk_end = min(cursor + timedelta(days=max_days), end)
        chunks.append((cursor, chunk_end))
        cursor = chunk_end
    return chunks


def _instant(day: date) -> str:
    return f"{day.isoformat()}T00:00:00.000Z"


def format_interval(start: date, end: date) -> str:
    """``YYYY-MM-DDT00:00:00.000Z/YYYY-MM-DDT00:00:00.000Z`` for the UTC days ``[start, end)``
    (explicit offsets: Genesys uses an interval's offset even when ``timeZone`` is given)."""
    if end <= start:
        raise ClientConfigError(f"empty interval: end {end} is not after start {start}")
    return f"{_instant(start)}/{_instant(end)}"


def parse_interval(value: Any) -> tuple[datetime, datetime]:
    """The two aware instants of an ISO ``start/end`` interval; ValueError when it is not one.

    An end without an offset is read as UTC (the simulator's contract choice); our client always
    sends offsets.
    """
    if not isinstance(value, str) or value.count("/") != 1:
        raise ValueError(f"not an ISO start/end interval: {value!r}")
    bounds: list[datetime] = []
    for part in value.split("/"):
        moment = datetime.fromisoformat(part)
        bounds.append(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
    return bounds[0], bounds[1]


def build_aggregate_query(start: date, end: date, metrics: Sequence[str] = FUNNEL_METRICS) -> dict[str, Any]:
    """The body of a funnel query over the UTC days ``[start, end)``: daily buckets per action map."""
    if not metrics:
        raise ClientConfigError("at least one metric is needed")
    return {
        "interval": format_interval(start, end),
        "granularity": "P1D",
        "timeZone": "UTC",
        "groupBy": [GROUP_DIMENSION],
        "metrics": list(metrics),
    }


def _count(value: Any) -> int | None:
    """A JSON count as an int, or None when it is not a finite, whole, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None
    return int(value) if value >= 0 else None


def funnel_counts(
    responses: Iterable[Any],
    start: date,
    end: date,
    *,
    metrics: Sequence[str] = FUNNEL_METRICS,
    endpoint: str = f"POST {AGGREGATES_QUERY_PATH}",
) -> FunnelCounts:
    """Validate aggregate answers (a sync response, or every page of an async job) for the UTC days
    ``[start, end)`` and return the counts per (action map id, UTC day).

    Within a group and bucket that are present, a metric that is absent counts 0 (Genesys omits
    zeros); groups and buckets that are absent are not invented. Unknown metrics, dimensions and
    fields are skipped here (``schema_drift`` lists them). Raises PayloadError (not retryable)
    naming what is wrong: a body or list of the wrong type, a group without its
    ``journeyActionMapId``, a bucket interval unreadable, outside ``[start, end)`` or not one whole
    UTC day, an asked metric without a whole non-negative ``stats.count``, or the same (map, day)
    or metric twice.
    """
    lower, upper = datetime.combine(start, datetime.min.time(), UTC), datetime.combine(end, datetime.min.time(), UTC)
    asked = frozenset(metrics)
    counts: FunnelCounts = {}

    def bad(detail: str) -> PayloadError:
        return PayloadError(endpoint, detail, status=200)

    for page_number, body in enumerate(responses, start=1):
        where = f"page {page_number}"
        if not isinstance(body, dict):
            raise bad(f"{where}: the answer is not a JSON object")
        results = body.get("results", [])  # {} is "nothing matched"
        if not isinstance(results, list):
            raise bad(f"{where}: results is not a list")
        for index, container in enumerate(results):
            at = f"{where} results[{index}]"
            if not isinstance(container, dict):
                raise bad(f"{at} is not an object")
            group = container.get("group")
            map_id = group.get(GROUP_DIMENSION) if isinstance(group, dict) else None
            if not isinstance(map_id, str) or not map_id:
                raise bad(f"{at}: group has no {GROUP_DIMENSION} (group={group!r})"[:300])
            buckets = container.get("data", [])
            if not isinstance(buckets, list):
                raise bad(f"{at} (map {map_id}): data is not a list")
            for bucket_index, bucket in enumerate(buckets):
                bat = f"{at}.data[{bucket_index}] (map {map_id})"
                if not isinstance(bucket, dict):
                    raise bad(f"{bat} is not an object")
                try:
                    bucket_start, bucket_end = parse_interval(bucket.get("interval"))
                except ValueError:
                    raise bad(f"{bat}: interval {bucket.get('interval')!r} is not an ISO start/end") from None
                if bucket_start < lower or bucket_end > upper:
                    raise bad(
                        f"{bat}: bucket {bucket.get('interval')!r} lies outside the asked interval "
                        f"{format_interval(start, end)}"
                    )
                day_start = bucket_start.astimezone(UTC)
                if day_start.time() != datetime.min.time() or bucket_end - bucket_start != timedelta(days=1):
                    raise bad(f"{bat}: bucket {bucket.get('interval')!r} is not one whole UTC day (asked P1D, UTC)")
                key = (map_id, day_start.date())
                if key in counts:
                    raise bad(f"{bat}: map {map_id} on {key[1]} appears twice")
                day_counts = dict.fromkeys(metrics, 0)
                seen: set[str] = set()
                entries = bucket.get("metrics", [])
                if not isinstance(entries, list):
                    raise bad(f"{bat}: metrics is not a list")
                for entry in entries:
                    name = entry.get("metric") if isinstance(entry, dict) else None
                    if not isinstance(name, str):
                        raise bad(f"{bat}: a metric entry has no metric name ({entry!r})"[:300])
                    if name not in asked:
                        continue  # unknown or not asked: schema drift, not an error
                    if name in seen:
                        raise bad(f"{bat}: metric {name} appears twice in one bucket")
                    seen.add(name)
                    stats = entry.get("stats")
                    raw = stats.get("count") if isinstance(stats, dict) else None
                    value = _count(raw)
                    if value is None:
                        raise bad(f"{bat} {key[1]}: {name} stats.count is {raw!r}, not a whole non-negative number")
                    day_counts[name] = value
                counts[key] = day_counts
    return counts


@dataclass(frozen=True)
class SchemaDrift:
    """What an answer holds that the client does not know (reported by the caller, never an error).

    Attributes:
        unknown_metrics: metric names outside the known 22.
        unrequested_metrics: known metrics the query did not ask for.
        unknown_dimensions: group keys other than ``journeyActionMapId``.
        unknown_fields: other unknown keys, as paths (``results[].data[].foo``).
    """

    unknown_metrics: tuple[str, ...] = ()
    unrequested_metrics: tuple[str, ...] = ()
    unknown_dimensions: tuple[str, ...] = ()
    unknown_fields: tuple[str, ...] = ()

    @classmethod
    def merge(cls, reports: Iterable[SchemaDrift]) -> SchemaDrift:
        """One report for several (e.g. the chunks of a run)."""
        reports = list(reports)

        def union(part: str) -> tuple[str, ...]:
            return tuple(sorted({name for report in reports for name in getattr(report, part)}))

        return cls(
            union("unknown_metrics"), union("unrequested_metrics"), union("unknown_dimensions"), union("unknown_fields")
        )

    def __bool__(self) -> bool:
        return any((self.unknown_metrics, self.unrequested_metrics, self.unknown_dimensions, self.unknown_fields))


def schema_drift(responses: Iterable[Any], metrics: Sequence[str] = FUNNEL_METRICS) -> SchemaDrift:
    """List what the answers hold beyond the known contract (pure; tolerant of malformed parts)."""
    unknown_metrics: set[str] = set()
    unrequested: set[str] = set()
    dimensions: set[str] = set()
    fields: set[str] = set()

    def extra(obj: Any, known: frozenset[str], path: str) -> None:
        if isinstance(obj, dict):
            fields.update(f"{path}{key}" for key in obj if key not in known)

    for body in responses:
        extra(body, _KNOWN_TOP, "")
        results = body.get("results") if isinstance(body, dict) else None
        for container in results if isinstance(results, list) else ():
            extra(container, _KNOWN_CONTAINER, "results[].")
            group = container.get("group") if isinstance(container, dict) else None
            if isinstance(group, dict):
                dimensions.update(k for k in group if k != GROUP_DIMENSION)
            buckets = container.get("data") if isinstance(container, dict) else None
            for bucket in buckets if isinstance(buckets, list) else ():
                extra(bucket, _KNOWN_BUCKET, "results[].data[].")
                entries = bucket.get("metrics") if isinstance(bucket, dict) else None
                for entry in entries if isinstance(entries, list) else ():
                    extra(entry, _KNOWN_METRIC, "results[].data[].metrics[].")
                    if not isinstance(entry, dict):
                        continue
                    extra(entry.get("stats"), _KNOWN_STATS, "results[].data[].metrics[].stats.")
                    name = entry.get("metric")
                    if isinstance(name, str) and name not in metrics:
                        (unrequested if name in KNOWN_METRICS else unknown_metrics).add(name)
    return SchemaDrift(
        tuple(sorted(unknown_metrics)), tuple(sorted(unrequested)), tuple(sorted(dimensions)), tuple(sorted(fields))
    )


@dataclass(frozen=True)
class AggregateChunk:
    """The answer to one query chunk: what was asked, the raw JSON as served, and its validation.

    Attributes:
        start: first UTC day of the chunk.
        end: the day after its last day (``[start, end)``).
        interval: the interval string sent.
        query: the body sent (the async body adds ``pageSize``).
        responses: the raw response JSON, unchanged, for the landing zone: one for a sync query,
            one per results page for an async job.
        mode: ``sync`` or ``async``.
        job_id: the async job that answered (None for sync).
        correlation_ids: ``ININ-Correlation-Id`` of every response used (for Genesys support).
        counts: the validated counts per (action map id, UTC day) (see ``funnel_counts``).
        drift: unknown metrics, dimensions and fields (see ``schema_drift``).
    """

    start: date
    end: date
    interval: str
    query: dict[str, Any]
    responses: tuple[Any, ...]
    mode: Literal["sync", "async"]
    job_id: str | None
    correlation_ids: tuple[str, ...]
    counts: FunnelCounts = field(repr=False)
    drift: SchemaDrift


class _JobGone(Exception):
    """The job's status or results answered 404: it expired or was removed (resubmit once)."""


# -- the client --------------------------------------------------------------------------------------
class JourneyAggregatesClient(ApiClientBase):
    """Read-only client of the real Genesys journey endpoints (action maps, journey aggregates).

    Construction, tokens, the shared rate budget, retries and stats are ``ApiClientBase``'s; the
    parameters shared with ``PredictiveEngagementClient`` mean the same. Genesys authorizes by the
    OAuth client's role: it needs ``analytics:journeyAggregate:view`` and ``journey:actionmap:view``
    (a 403 raises PermissionDeniedError, never retried). No OAuth scope is requested by default.

    Args (beyond the shared ones):
        max_query_days: days per aggregate query (one query per chunk, never one per day).
        async_above_days: a requested range longer than this goes straight to the async job family
            (None: sync first; a 413 moves that chunk to async).
        async_page_size: ``pageSize`` of async jobs.
        job_poll_seconds: first wait between job status polls (then x1.5 up to
            ``job_poll_max_seconds``).
        job_deadline_seconds: a job still running this long after its submission is deleted and
            AsyncJobError (retryable) is raised. Measured with ``clock``.
    """

    ALLOWED_SCOPES = JOURNEY_READ_SCOPES
    DEFAULT_SCOPES = ()  # Genesys authorizes these endpoints by the client's role permissions
    SCOPES_OPTIONAL = True

    def __init__(
        self,
        api_url: str,
        login_url: str,
        credentials: Sequence[OAuthCredentials] | OAuthCredentials,
        *,
        max_query_days: int = MAX_QUERY_DAYS,
        async_above_days: int | None = None,
        async_page_size: int = ASYNC_PAGE_SIZE,
        job_poll_seconds: float = 3.0,
        job_poll_max_seconds: float = 30.0,
        job_deadline_seconds: float = 900.0,
        **base_options: Any,
    ) -> None:
        """``base_options``: the shared construction of ``ApiClientBase`` (budget, retries, pool, clock)."""
        super().__init__(api_url, login_url, credentials, **base_options)
        for name, value in (("max_query_days", max_query_days), ("async_page_size", async_page_size)):
            if not isinstance(value, int) or value < 1:
                raise ClientConfigError(f"{name} must be a positive integer, got {value!r}")
        if async_above_days is not None and (not isinstance(async_above_days, int) or async_above_days < 1):
            raise ClientConfigError(f"async_above_days must be a positive integer or None, got {async_above_days!r}")
        for name, number in (
            ("job_poll_seconds", job_poll_seconds),
            ("job_poll_max_seconds", job_poll_max_seconds),
            ("job_deadline_seconds", job_deadline_seconds),
        ):
            if not number > 0:
                raise ClientConfigError(f"{name} must be positive, got {number!r}")
        self.max_query_days = max_query_days
        self.async_above_days = async_above_days
        self.async_page_size = async_page_size
        self.job_poll_seconds = float(job_poll_seconds)
        self.job_poll_max_seconds = float(max(job_poll_max_seconds, job_poll_seconds))
        self.job_deadline_seconds = float(job_deadline_seconds)

    # -- action maps ----------------------------------------------------------------------------
    def list_action_map_pages(self) -> list[dict[str, Any]]:
        """Every raw page of ``GET /api/v2/journey/actionmaps`` (``pageSize=100``), in page order.

        Follows ``nextUri`` (relative to the API host, resolved here and kept on it) up to
        ``pageCount``; without a ``nextUri`` it asks the next ``pageNumber`` itself. A page number
        that repeats or skips, a ``pageCount`` that moves by more than a tenth (at least 1) from
        the first page's, or more than ``max_pages`` pages is a PaginationError.
        """
        params: Params = [("pageSize", ACTION_MAP_PAGE_SIZE), ("pageNumber", 1)]
        body, endpoint, _ = self._request_json("GET", ACTION_MAPS_PATH, params, permissions=[ACTION_MAPS_PERMISSION])
        _check_action_map_page(endpoint, body, expected_number=1)
        pages = [body]
        first_count: int = body["pageCount"]
        allowed_drift = max(1, first_count // 10)
        while body["entities"] and body["pageNumber"] < body["pageCount"]:
            if len(pages) >= self.max_pages:
                raise PaginationError(endpoint, f"more than {self.max_pages} pages", status=200)
            expected = body["pageNumber"] + 1
            next_uri = body.get("nextUri")
            if isinstance(next_uri, str) and next_uri:
                url, next_params = self._resolve_next(endpoint, next_uri), None
            else:
                url, next_params = ACTION_MAPS_PATH, [("pageSize", ACTION_MAP_PAGE_SIZE), ("pageNumber", expected)]
            body, endpoint, _ = self._request_json("GET", url, next_params, permissions=[ACTION_MAPS_PERMISSION])
            _check_action_map_page(endpoint, body, expected_number=expected)
            if abs(body["pageCount"] - first_count) > allowed_drift:
                raise PaginationError(
                    endpoint,
                    f"pageCount moved from {first_count} to {body['pageCount']} during the listing; refused",
                    status=200,
                )
            pages.append(body)
        return pages

    def list_action_maps(self) -> list[dict[str, Any]]:
        """Every action map entity of the listing, as served."""
        return [entity for page in self.list_action_map_pages() for entity in page["entities"]]

    # -- aggregates -----------------------------------------------------------------------------
    def query_funnel(
        self,
        start: date | datetime,
        end: date | datetime,
        *,
        metrics: Sequence[str] = FUNNEL_METRICS,
        cancel: Callable[[], bool] | None = None,
    ) -> list[AggregateChunk]:
        """The daily funnel of every action map over the UTC days ``[start, end)``.

        One query per chunk of at most ``max_query_days`` days (never one per day), sync unless
        the range is longer than ``async_above_days`` or the server answers 413 (then that chunk
        runs as an async job). Every answer is validated before anything is returned, so a caller
        that lands ``chunk.responses`` never lands a malformed one. ``cancel`` is polled while an
        async job runs; True deletes the job and raises QueryCancelledError.
        """
        first, stop = as_day(start, "start"), as_day(end, "end")
        use_async = self.async_above_days is not None and (stop - first).days > self.async_above_days
        return [
            self.query_chunk(
                chunk_start, chunk_end, metrics=metrics, mode="async" if use_async else "auto", cancel=cancel
            )
            for chunk_start, chunk_end in chunk_days(first, stop, self.max_query_days)
        ]

    def query_chunk(
        self,
        start: date | datetime,
        end: date | datetime,
        *,
        metrics: Sequence[str] = FUNNEL_METRICS,
        mode: Literal["auto", "sync", "async"] = "auto",
        cancel: Callable[[], bool] | None = None,
    ) -> AggregateChunk:
        """One aggregate query over ``[start, end)`` (at most ``max_query_days`` days).

        ``auto``: sync, and async when the sync query answers 413; ``sync``: a 413 raises;
        ``async``: the job family directly.
        """
        start, end = as_day(start, "start"), as_day(end, "end")
        if (end - start).days > self.max_query_days:
            raise ClientConfigError(f"a chunk spans at most {self.max_query_days} days, got {start}..{end}")
        query = build_aggregate_query(start, end, metrics)
        if mode != "async":
            try:
                body, endpoint, response = self._request_json(
                    "POST", AGGREGATES_QUERY_PATH, json_body=query, permissions=[AGGREGATES_PERMISSION]
                )
            except ApiError as exc:
                if exc.status != 413 or mode == "sync":
                    raise
                log.info(
                    "%s: sync query too large (413, contextId=%s); running it as an async job",
                    exc.endpoint,
                    exc.context_id,
                )
            else:
                return _chunk(start, end, query, (body,), "sync", None, [response], metrics, endpoint)
        return self._run_job(start, end, query, metrics, cancel)

    # -- async jobs -----------------------------------------------------------------------------
    def _run_job(
        self,
        start: date,
        end: date,
        query: dict[str, Any],
        metrics: Sequence[str],
        cancel: Callable[[], bool] | None,
    ) -> AggregateChunk:
        """Submit, poll, page; resubmit once when a job ends FAILED/EXPIRED/CANCELLED (or vanishes).

        Any exception or interrupt while a job is live (cancel hook, KeyboardInterrupt, deadline,
        a bad page) deletes the job before it propagates.
        """
        job_query = {**query, "pageSize": self.async_page_size}
        jobs_endpoint = f"POST {AGGREGATES_JOBS_PATH}"
        job_id, state, detail = "", "", ""
        for submission in (1, 2):
            job_id = self._submit_job(job_query)
            try:
                status = self._wait_for_job(job_id, cancel)
                state = status["state"]
                if state == "FULFILLED":
                    pages, responses, endpoint = self._job_pages(job_id, cancel)
                    return _chunk(start, end, job_query, pages, "async", job_id, responses, metrics, endpoint)
                detail = status.get("errorMessage") if isinstance(status.get("errorMessage"), str) else ""
            except _JobGone:
                state, detail = "EXPIRED", "the job answered 404 (expired or removed)"
            except BaseException:
                self._delete_job(job_id)
                raise
            log.warning(
                "aggregate job %s for %s ended %s (%s)%s",
                job_id,
                format_interval(start, end),
                state,
                detail or "-",
                "; resubmitting once" if submission == 1 else "",
            )
        raise AsyncJobError(
            jobs_endpoint, job_id, state, detail or "no results after one resubmission", retryable=state != "FAILED"
        )

    def _submit_job(self, job_query: dict[str, Any]) -> str:
        body, endpoint, response = self._request_json(
            "POST", AGGREGATES_JOBS_PATH, json_body=job_query, permissions=[AGGREGATES_PERMISSION]
        )
        job_id = body.get("jobId") if isinstance(body, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise PayloadError(endpoint, "job submission answered without a jobId", status=response.status_code)
        log.info("submitted aggregate job %s (contextId=%s)", job_id, context_id(response) or "-")
        return job_id

    def _job_path(self, job_id: str) -> str:
        return f"{AGGREGATES_JOBS_PATH}/{_segment(job_id)}"

    def _wait_for_job(self, job_id: str, cancel: Callable[[], bool] | None) -> dict[str, Any]:
        """Poll until the job leaves QUEUED/PENDING; wait ``job_poll_seconds`` x1.5 each time."""
        deadline = self._clock() + self.job_deadline_seconds
        delay = self.job_poll_seconds
        while True:
            try:
                status, endpoint, _ = self._request_json(
                    "GET", self._job_path(job_id), permissions=[AGGREGATES_PERMISSION]
                )
            except NotFoundError:
                raise _JobGone from None
            state = status.get("state") if isinstance(status, dict) else None
            if state not in JOB_STATES:
                raise PayloadError(endpoint, f"job state {state!r} is none of {sorted(JOB_STATES)}", status=200)
            if state == "FULFILLED" or state in _JOB_DEAD_STATES:
                return status
            _check_cancel(cancel, job_id)
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise AsyncJobError(
                    f"GET {AGGREGATES_JOBS_PATH}/{{jobId}}",
                    job_id,
                    state,
                    f"still {state} after {self.job_deadline_seconds:.0f}s; deleted it, retry the extraction later",
                    retryable=True,
                )
            self._sleep(min(delay, remaining))
            delay = min(delay * 1.5, self.job_poll_max_seconds)

    def _job_pages(self, job_id: str, cancel: Callable[[], bool] | None) -> tuple[list[Any], list[httpx.Response], str]:
        """Every results page of a fulfilled job, following ``cursor`` until it is absent."""
        path = f"{self._job_path(job_id)}/results"
        pages: list[Any] = []
        responses: list[httpx.Response] = []
        seen: set[str] = set()
        cursor: str | None = None
        endpoint = f"GET {path}"
        while True:
            _check_cancel(cancel, job_id)
            params: Params | None = [("cursor", cursor)] if cursor else None
            try:
                body, endpoint, response = self._request_json("GET", path, params, permissions=[AGGREGATES_PERMISSION])
            except NotFoundError:
                raise _JobGone from None
            if not isinstance(body, dict):
                raise PayloadError(endpoint, "results page is not a JSON object", status=200)
            pages.append(body)
            responses.append(response)
            next_cursor = body.get("cursor")
            if next_cursor is None or next_cursor == "":
                return pages, responses, endpoint
            if not isinstance(next_cursor, str):
                raise PayloadError(endpoint, f"cursor is not a string: {next_cursor!r}"[:200], status=200)
            if next_cursor in seen or next_cursor == cursor:
                raise PaginationError(
                    endpoint, f"job {job_id}: result cursor repeats after {len(pages)} pages (a loop)", status=200
                )
            if len(pages) >= self.max_pages:
                raise PaginationError(endpoint, f"job {job_id}: more than {self.max_pages} result pages", status=200)
            seen.add(next_cursor)
            cursor = next_cursor

    def _delete_job(self, job_id: str) -> None:
        """Best effort, one attempt: a job we stop waiting for should not keep running server-side."""
        try:
            self._request("DELETE", self._job_path(job_id), permissions=[AGGREGATES_PERMISSION], retry=False)
            log.info("deleted aggregate job %s", job_id)
        except (PredictiveEngagementError, httpx.HTTPError) as exc:
            # Never hide the reason we are deleting it; the job expires by itself anyway.
            log.warning("could not delete aggregate job %s: %s", job_id, exc)


# -- internals -------------------------------------------------------------------------------------
def _chunk(
    start: date,
    end: date,
    query: dict[str, Any],
    responses: Sequence[Any],
    mode: Literal["sync", "async"],
    job_id: str | None,
    http_responses: Sequence[httpx.Response],
    metrics: Sequence[str],
    endpoint: str,
) -> AggregateChunk:
    counts = funnel_counts(responses, start, end, metrics=metrics, endpoint=endpoint)
    drift = schema_drift(responses, metrics)
    if drift:
        log.info("schema drift in %s for %s: %s", endpoint, format_interval(start, end), drift)
    ids = tuple(i for i in (context_id(r) for r in http_responses) if i)
    return AggregateChunk(
        start=start,
        end=end,
        interval=query["interval"],
        query=query,
        responses=tuple(responses),
        mode=mode,
        job_id=job_id,
        correlation_ids=ids,
        counts=counts,
        drift=drift,
    )


def _check_cancel(cancel: Callable[[], bool] | None, job_id: str) -> None:
    if cancel is not None and cancel():
        raise QueryCancelledError(f"cancelled by the caller while aggregate job {job_id} was running")


def _int_field(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _check_action_map_page(endpoint: str, body: Any, *, expected_number: int) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("entities"), list):
        raise PayloadError(endpoint, "action-map page has no entities list", status=200)
    if not all(isinstance(e, dict) and isinstance(e.get("id"), str) and e["id"] for e in body["entities"]):
        raise PayloadError(endpoint, "action map without an id", status=200)
    number, count = _int_field(body, "pageNumber"), _int_field(body, "pageCount")
    if number is None or count is None:
        raise PayloadError(
            endpoint,
            f"pageNumber {body.get('pageNumber')!r} / pageCount {body.get('pageCount')!r} are not whole numbers",
            status=200,
        )
    if number != expected_number:
        what = "repeats" if number < expected_number else "skips ahead"
        raise PaginationError(
            endpoint, f"asked page {expected_number}, got page {number}: the page number {what}", status=200
        )


def _segment(value: str) -> str:
    """Percent-encode a job id as one path segment (a jobId like ``../x`` cannot change the path)."""
    return quote(value, safe="")
