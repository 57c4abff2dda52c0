"""The Predictive Engagement (seed contract) client: its endpoints, pagination and payload checks.

Tokens, the rate budget, retries and the transport live in ``base.ApiClientBase``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from urllib.parse import quote

from .base import DEFAULT_REQUESTS_PER_MINUTE, ApiClientBase, ClientStats, Params
from .errors import ClientConfigError, PaginationError, PayloadError

__all__ = [
    "ANALYTICS_PAGE_SIZE",
    "DEFAULT_REQUESTS_PER_MINUTE",
    "LISTING_PAGE_SIZE",
    "ClientStats",
    "PredictiveEngagementClient",
]

log = logging.getLogger("pe_assets.client")

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


class PredictiveEngagementClient(ApiClientBase):
    """Read-only client of the Predictive Engagement analytics API (see the OpenAPI contract).

    Tokens, the shared rate budget, retries, the thread pool and stats come from ``ApiClientBase``:
    one pooled ``httpx.Client`` shared by every thread; each request takes a slot from the rate
    budget of the OAuth client with the most budget left (shared across processes via
    ``budget_path``), gets that client's bearer token, and is retried by tenacity (429 after
    Retry-After; 5xx, timeouts and connection errors with backoff and jitter; a 401 renews the
    token and repeats the call once).

    Construction: see ``ApiClientBase`` (credentials, budget, retries, pool).
    """

    # -- endpoints --------------------------------------------------------------------------------
    def list_campaign_pages(self, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every raw page of the campaign listing, in the order served (``pageSize=100``)."""
        params: Params = [("pageSize", LISTING_PAGE_SIZE)]
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
        params: Params = [
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
        params: Params = [
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

    def _paginate(self, path: str, params: Params, check: Callable[[str, Any], None]) -> list[dict[str, Any]]:
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
    def _get_json(self, path_or_url: str, params: Params | None) -> tuple[Any, str]:
        """GET with budget, token, retries; return (parsed JSON, ``GET /path``)."""
        body, endpoint, _ = self._request_json("GET", path_or_url, params)
        return body, endpoint


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
