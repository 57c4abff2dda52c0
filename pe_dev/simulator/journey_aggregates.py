"""The real Genesys journey-aggregate endpoints: the seeded action-map world and its route handlers.

Contract: ``pe_assets/contract/genesys-journey-aggregates.openapi.yaml``. Served by the same
``SimulatorServer`` as the seed contract (same host, token endpoint, rate limiter and clock);
``server.py`` authenticates, authorizes (``required_permission``), rate-limits and then calls
:meth:`JourneyService.handle`.

World (pure function of the seed, like ``predictive_engagement.World``):

* ``n_action_maps`` listed maps, created in 2023. Roles by a seeded permutation: ``inactive``
  (deactivated on a 2024 day, no data after it), ``content_offer`` (accepted is terminal, so
  started/engaged/abandoned are always absent), ``architect_flow`` (offered/started/engaged/
  timed-out "not applicable", always absent), ``legacy`` (reports ``legacy_media_type``,
  "webchat", outside the SDK enum; only when that setting is not None) and ``sparse`` (a tiny
  map without data on about half of the days). Other maps are mostly active web-messaging offers.
* ``n_deleted_action_maps`` more maps that are absent from the listing but still in aggregates.
* Per (map, UTC day): counts for the 11 funnel metrics plus the three "outside schedule" /
  frequency-cap metrics; None (no group/bucket at all) on ~5 % of days. About 3 % of days
  attribute few qualifications (so count/qualified > 1) and 1 % none at all.
* A day's counts are spread over its 24 UTC hours (events count at the start of their hour), so
  buckets that are not whole UTC days (another timeZone, PT1H, non-midnight intervals) are exact
  sums. Hours not ended by the simulator clock have no data yet.

The other metrics of the enum are valid but always 0 here (so never sent). Only the
``journeyActionMapId``, ``journeyActionMapVersion`` and ``journeyActionMediaType`` dimensions
can be grouped or filtered by; another valid dimension gets a 400 naming the simulator's limit.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pe_dev.simulator.config import (
    ACTION_MAP_PERMISSION,
    AGGREGATE_PERMISSION,
    JOURNEY_FAULT_KINDS,
    SimulatorConfig,
)
from pe_dev.simulator.predictive_engagement import rng_for, stable_uuid

ACTION_MAPS_PATH = "/api/v2/journey/actionmaps"
AGGREGATES_PREFIX = "/api/v2/analytics/journeys/aggregates"
QUERY_PATH = f"{AGGREGATES_PREFIX}/query"
JOBS_PATH = f"{AGGREGATES_PREFIX}/jobs"

#: The funnel of JOURNEY_AGGREGATES.md section 6.1, in step_sequence order.
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
#: Modelled too, but outside fact_journey_step (they overlap "blocked").
EXTRA_METRICS: tuple[str, ...] = (
    "nWebActionsFrequencyCapReached",
    "nWebActionsQualifiedOutsideSchedule",
    "nWebActionsOfferedOutsideSchedule",
)
MODELLED_METRICS: tuple[str, ...] = FUNNEL_METRICS + EXTRA_METRICS
#: The JourneyMetric enum (22, .NET SDK 270.0.0).
JOURNEY_METRICS: tuple[str, ...] = (
    "nDistinctJourneyActions",
    "nDistinctJourneySessions",
    "nJourneyActionsBlocked",
    "nJourneyOutcomesAchieved",
    "nJourneyOutcomesAttributed",
    "nJourneySegmentsAssigned",
    "nJourneySessions",
    "nWebActionsAbandoned",
    "nWebActionsAccepted",
    "nWebActionsEngaged",
    "nWebActionsErrored",
    "nWebActionsFrequencyCapReached",
    "nWebActionsIgnored",
    "nWebActionsOffered",
    "nWebActionsOfferedOutsideSchedule",
    "nWebActionsQualified",
    "nWebActionsQualifiedOutsideSchedule",
    "nWebActionsRejected",
    "nWebActionsStarted",
    "nWebActionsTimedout",
    "oJourneyOutcomeTouchpointValue",
    "oJourneyOutcomeValue",
)
#: The JourneyDimension enum (40).
JOURNEY_DIMENSIONS: tuple[str, ...] = (
    "containsAllCondition",
    "containsAnyCondition",
    "endsWithCondition",
    "equalCondition",
    "journeyActionId",
    "journeyActionMapId",
    "journeyActionMapVersion",
    "journeyActionMediaType",
    "journeyActionTargetId",
    "journeyActionTemplateId",
    "journeyBlockingActionMapId",
    "journeyBlockingEmergencyScheduleGroupId",
    "journeyBlockingReason",
    "journeyBlockingScheduleGroupId",
    "journeyDeviceCategory",
    "journeyDeviceType",
    "journeyFrequencyCapReason",
    "journeyIpGeolocationCountry",
    "journeyOutcomeId",
    "journeySegmentAssignmentState",
    "journeySegmentId",
    "journeySessionId",
    "journeySessionSegmentId",
    "journeySessionType",
    "notContainsAllCondition",
    "notContainsAnyCondition",
    "notEqualCondition",
    "startsWithCondition",
    "touchpointActionMapId",
    "touchpointAgentId",
    "touchpointAttributionScope",
    "touchpointChannelMessageType",
    "touchpointChannelPlatform",
    "touchpointChannelType",
    "touchpointConversationId",
    "touchpointInteractionType",
    "touchpointQueueId",
    "touchpointRequestedRouting",
    "touchpointUsedRouting",
    "touchpointWrapupCode",
)
#: Dimensions the simulator can group and filter by (the world knows nothing finer than a map).
SUPPORTED_DIMENSIONS: tuple[str, ...] = ("journeyActionMapId", "journeyActionMapVersion", "journeyActionMediaType")
MEDIA_TYPES: tuple[str, ...] = ("webMessagingOffer", "contentOffer", "integrationAction", "architectFlow", "openAction")
LISTING_DEFAULT_PAGE_SIZE = 25
LISTING_MAX_PAGE_SIZE = 100
RESULTS_DEFAULT_PAGE_SIZE = 100
RESULTS_MAX_PAGE_SIZE = 1000
#: Guard against granularities so fine that cutting the buckets would stall the server.
MAX_BUCKETS = 100_000
#: What the ``unknown_metric`` fault sends.
UNKNOWN_METRIC = "nWebActionsTeleported"
#: Queryable / filterable / sortable ActionMap fields of the listing.
_LISTING_FIELDS: tuple[str, ...] = (
    "id",
    "displayName",
    "isActive",
    "weight",
    "version",
    "action.mediaType",
    "action.actionTemplate.id",
    "activation.type",
    "ignoreFrequencyCap",
    "createdDate",
    "modifiedDate",
)
_QUERY_FIELDS: frozenset[str] = frozenset(
    {
        "interval",
        "granularity",
        "timeZone",
        "groupBy",
        "filter",
        "metrics",
        "flattenMultivaluedDimensions",
        "views",
        "alternateTimeDimension",
    }
)
_RUNNING = ("QUEUED", "PENDING")
# Relative hourly traffic (UTC): quiet nights, busy working hours.
_DIURNAL: tuple[float, ...] = (
    0.2, 0.15, 0.1, 0.1, 0.1, 0.15, 0.3, 0.6, 0.9, 1.1, 1.2, 1.2,
    1.15, 1.2, 1.25, 1.2, 1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.45, 0.3,
)  # fmt: skip
_THEMES = (
    "Checkout hesitation",
    "Pricing page dwell",
    "Cart abandonment",
    "Returning visitor",
    "Support search",
    "Plan comparison",
    "Renewal reminder",
    "Trial expiry",
    "High-value lead",
    "Product tour",
)
_OFFERS = {
    "webMessagingOffer": "messaging offer",
    "contentOffer": "content offer",
    "integrationAction": "integration action",
    "architectFlow": "callback flow",
    "openAction": "open action",
}
_URLS = ("/checkout", "/pricing", "/cart", "/support", "/plans", "/account/renew", "/trial", "/demo")
_ISO_INSTANT = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,3})?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
_INTERVAL_RE = re.compile(rf"^({_ISO_INSTANT})/({_ISO_INSTANT})$")
_DURATION_RE = re.compile(
    r"^P(?=[0-9T])(?:([0-9]+)Y)?(?:([0-9]+)M)?(?:([0-9]+)W)?(?:([0-9]+)D)?"
    r"(?:T(?=[0-9])(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+)S)?)?$"
)
_ROUTES: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    (re.compile(rf"^{ACTION_MAPS_PATH}$"), "listActionMaps", ("GET",)),
    (re.compile(rf"^{QUERY_PATH}$"), "query", ("POST",)),
    (re.compile(rf"^{JOBS_PATH}$"), "submitJob", ("POST",)),
    (re.compile(rf"^{JOBS_PATH}/(?P<id>[^/]+)$"), "job", ("GET", "DELETE")),
    (re.compile(rf"^{JOBS_PATH}/(?P<id>[^/]+)/results$"), "jobResults", ("GET",)),
)


# ===================================================================== helpers
def match_route(path: str) -> tuple[str, dict[str, str], tuple[str, ...]] | None:
    """(operation, path params, allowed methods) when ``path`` belongs to this contract."""
    for pattern, op, methods in _ROUTES:
        match = pattern.match(path)
        if match:
            return op, match.groupdict(), methods
    return None


def required_permission(op: str) -> str:
    """The Genesys permission an operation needs."""
    return ACTION_MAP_PERMISSION if op == "listActionMaps" else AGGREGATE_PERMISSION


def permission_error(permission: str) -> dict[str, Any]:
    """The 403 body for a client whose roles lack ``permission`` (contextId filled by the server)."""
    return {
        "message": f"You are missing the following permission(s): {permission}",
        "code": "missing.any.permissions",
        "status": 403,
        "messageWithParams": "You are missing the following permission(s): {permissions}",
        "messageParams": {"permissions": permission},
        "contextId": "",
        "details": [],
        "errors": [],
    }


def rate_limited_error(retry_after: int) -> dict[str, Any]:
    """Genesys' normalized 429 body (code ``too.many.requests.retry.after``)."""
    return {
        "message": f"Rate limit exceeded the maximum. Retry the request in [{retry_after}] seconds",
        "code": "too.many.requests.retry.after",
        "status": 429,
        "contextId": "",
        "details": [],
        "errors": [],
    }


def iso_ms(moment: datetime) -> str:
    """UTC with milliseconds and ``Z``, as Genesys writes instants."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


class CursorCodec(Protocol):
    """The server's signed-cursor codec (shared so cursors look alike across contracts)."""

    def encode(self, payload: dict[str, Any]) -> str: ...

    def decode(self, token: str) -> dict[str, Any]: ...


class _Error(Exception):
    """A handler's error answer (turned into an ErrorBody)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def _bad(message: str) -> _Error:
    return _Error(400, "bad.request", message)


# ===================================================================== the world
@dataclass(frozen=True)
class _Map:
    index: int
    id: str
    listed: bool
    is_active: bool
    media_type: str
    version: int
    created: datetime
    last_day: date | None  # no data after this day (deactivated or deleted)
    volume: float  # typical qualified count on a weekday
    gap_rate: float  # share of days without any data
    json: dict[str, Any]


class JourneyWorld:
    """Action maps and their per-(map, day) funnel counts; everything follows from the seed."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.seed = config.seed
        self.roles: dict[str, str] = {}
        self.maps: list[_Map] = []
        n = config.n_action_maps
        order = list(range(n))
        rng_for(self.seed, "actionmap-roles").shuffle(order)
        role_of: dict[int, str] = {
            order[0]: "inactive",
            order[1]: "content_offer",
            order[2]: "architect_flow",
            order[3]: "legacy",
            order[4]: "sparse",
        }
        names: set[str] = set()
        for index in range(n + config.n_deleted_action_maps):
            role = role_of.get(index, "deleted" if index >= n else "")
            built = self._build(index, role, names)
            self.maps.append(built)
            if role and role != "deleted" and (role != "legacy" or config.legacy_media_type):
                self.roles[role] = built.id
        self.by_id: dict[str, _Map] = {m.id: m for m in self.maps}
        # Cached per instance: a day's counts never change, and a 31-day x 400-map query reads 12,400.
        self._day = functools.lru_cache(maxsize=200_000)(self._generate_day)
        self._hours = functools.lru_cache(maxsize=20_000)(self._generate_hours)

    # ------------------------------------------------------------- maps
    def _build(self, index: int, role: str, names: set[str]) -> _Map:
        rng = rng_for(self.seed, "actionmap", index)
        map_id = stable_uuid(self.seed, "actionmap", index)
        if role == "content_offer":
            media = "contentOffer"
        elif role == "architect_flow":
            media = "architectFlow"
        elif role == "legacy" and self.config.legacy_media_type:
            media = self.config.legacy_media_type
        else:
            media = rng.choices(MEDIA_TYPES, weights=(6, 2, 1, 1, 1))[0]
        created = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(
            days=rng.randrange(0, 330), hours=rng.randrange(7, 19), minutes=rng.randrange(60), seconds=rng.randrange(60)
        )
        modified = created + timedelta(days=rng.randrange(0, 30), hours=rng.randrange(0, 10), minutes=rng.randrange(60))
        is_active = role not in ("inactive", "deleted") and rng.random() > 0.15
        last_day: date | None = None
        if not is_active:
            # Deactivated (or deleted) on a 2024 day: data until the day before, none after.
            stopped = datetime(2024, 2, 1, tzinfo=UTC) + timedelta(days=rng.randrange(0, 300), hours=rng.randrange(24))
            last_day = stopped.date() - timedelta(days=1)
            modified = stopped
        if role == "sparse":
            volume, gap_rate = rng.uniform(2.0, 6.0), 0.5
        else:
            volume, gap_rate = math.exp(rng.uniform(math.log(40), math.log(4000))), 0.05
        version = 1 + rng.randrange(0, 9)
        theme = _THEMES[rng.randrange(len(_THEMES))]
        name = f"{theme} - {_OFFERS.get(media, 'chat offer')}"
        if name in names:
            name = f"{name} #{index + 1}"
        names.add(name)
        body: dict[str, Any] = {
            "id": map_id,
            "version": version,
            "isActive": is_active,
            "displayName": name,
            "triggerWithSegments": [stable_uuid(self.seed, "segment", rng.randrange(20))],
            "pageUrlConditions": [{"values": [rng.choice(_URLS)], "operator": "containsAny"}],
            "activation": {"type": "immediate"},
            "weight": rng.choice((1, 2, 2, 3)),
            "action": self._action(rng, media),
            "actionMapScheduleGroups": {"actionMapScheduleGroup": {"id": stable_uuid(self.seed, "schedule", index)}},
            "ignoreFrequencyCap": rng.random() < 0.2,
            "createdDate": iso_ms(created),
            "modifiedDate": iso_ms(modified),
            "startDate": iso_ms(created + timedelta(minutes=1)),
            "selfUri": f"{ACTION_MAPS_PATH}/{map_id}",
        }
        if rng.random() < 0.3:
            body["activation"] = {"type": "delay", "delayInSeconds": rng.choice((10, 30, 60))}
        if rng.random() < 0.4:
            body["triggerWithEventConditions"] = [
                {
                    "key": "page.url",
                    "values": [rng.choice(_URLS)],
                    "operator": "containsAny",
                    "streamType": "Web",
                    "sessionType": "web",
                    "eventName": "page_viewed",
                }
            ]
        if last_day is not None:
            body["endDate"] = iso_ms(modified)
        return _Map(
            index, map_id, role != "deleted", is_active, media, version, created, last_day, volume, gap_rate, body
        )

    def _action(self, rng: random.Random, media: str) -> dict[str, Any]:
        action: dict[str, Any] = {"mediaType": media}
        if media == "contentOffer":
            template = stable_uuid(self.seed, "template", rng.randrange(5))
            action["actionTemplate"] = {"id": template, "selfUri": f"/api/v2/journey/actiontemplates/{template}"}
        elif media == "architectFlow":
            flow = stable_uuid(self.seed, "flow", rng.randrange(5))
            action["architectFlowFields"] = {"architectFlow": {"id": flow, "selfUri": f"/api/v2/flows/{flow}"}}
        elif media == "webMessagingOffer":
            action["webMessagingOfferFields"] = {"offerText": "Can we help you with anything?"}
        elif media == "openAction":
            action["openActionFields"] = {"openAction": {"id": stable_uuid(self.seed, "open", rng.randrange(3))}}
        return action

    def action_maps(self) -> list[dict[str, Any]]:
        """The listing's maps in canonical order (deep copies)."""
        return [copy.deepcopy(m.json) for m in self.maps if m.listed]

    def deleted_ids(self) -> list[str]:
        """Maps in aggregates but no longer listed."""
        return [m.id for m in self.maps if not m.listed]

    # ------------------------------------------------------------- counts
    def _generate_day(self, index: int, day: date) -> tuple[int, ...] | None:
        """Counts in MODELLED_METRICS order, or None when the map has no data that day."""
        m = self.maps[index]
        if day < m.created.date() or (m.last_day is not None and day > m.last_day):
            return None
        rng = rng_for(self.seed, "journey-day", m.id, day.isoformat())
        if rng.random() < m.gap_rate:
            return None
        weekday = (1.0, 1.05, 1.08, 1.04, 0.95, 0.6, 0.5)[day.weekday()]
        qualified = round(m.volume * weekday * rng.uniform(0.7, 1.3))
        blocked = round(qualified * rng.uniform(0.1, 0.4))
        # Not strictly nested: offered + blocked need not equal qualified.
        offered = round((qualified - blocked) * rng.uniform(0.9, 1.05))
        accepted = round(offered * rng.uniform(0.08, 0.25))
        started = round(accepted * rng.uniform(0.75, 0.98))
        engaged = round(started * rng.uniform(0.7, 0.95))
        abandoned = round((started - engaged) * rng.uniform(0.3, 0.9))
        left = offered - accepted
        rejected = round(left * rng.uniform(0.15, 0.35))
        ignored = round(left * rng.uniform(0.2, 0.45))
        timedout = round(left * rng.uniform(0.02, 0.12))
        errored = round(offered * rng.uniform(0.0, 0.01))
        cap = round(blocked * rng.uniform(0.0, 0.3))
        q_outside = round(qualified * rng.uniform(0.0, 0.03))
        o_outside = round(offered * rng.uniform(0.0, 0.01))
        rare = rng.random()
        if m.media_type == "contentOffer":
            started = engaged = abandoned = 0  # accepting a content offer is terminal
        elif m.media_type == "architectFlow":
            accepted = round((qualified - blocked) * rng.uniform(0.5, 0.9))  # accepted = flow started
            # Offered/started/engaged/timed out are "not applicable" to flows; nor are the
            # visitor-side exits of an invitation.
            offered = started = engaged = timedout = ignored = abandoned = o_outside = 0
        if rare < 0.01:
            qualified = 0  # later states attributed to a day without qualifications: rate undefined
        elif rare < 0.04:
            qualified = max(1, qualified // 25)  # sparse qualifications: count/qualified > 1
        counts = (
            qualified,
            offered,
            accepted,
            started,
            engaged,
            blocked,
            rejected,
            ignored,
            timedout,
            abandoned,
            errored,
            cap,
            q_outside,
            o_outside,
        )
        return counts if any(counts) else None

    def _generate_hours(self, index: int, day: date) -> tuple[float, ...]:
        """The share of the day's events before each UTC hour boundary 0..24 (0.0 ... 1.0).

        Counts before hour h are ``round(total * share[h])``: rounding the cumulative share (not
        each hour's) keeps every hour >= 0 and the day's sum exact.
        """
        rng = rng_for(self.seed, "journey-hours", self.maps[index].id, day.isoformat())
        cumulative = [0.0]
        for weight in _DIURNAL:
            cumulative.append(cumulative[-1] + weight * rng.uniform(0.6, 1.4))
        return tuple(c / cumulative[-1] for c in cumulative)

    def day_counts(self, map_id: str, day: date) -> dict[str, int] | None:
        """Every modelled metric's count (zeros included) for a whole UTC day, or None."""
        counts = self._day(self.by_id[map_id].index, day)
        return None if counts is None else dict(zip(MODELLED_METRICS, counts, strict=True))

    def funnel(self, map_id: str, day: date) -> dict[str, int] | None:
        """The 11 funnel counts (zeros included) of a whole UTC day; None when none is non-zero."""
        counts = self.day_counts(map_id, day)
        if counts is None:
            return None
        funnel = {metric: counts[metric] for metric in FUNNEL_METRICS}
        return funnel if any(funnel.values()) else None

    def window_counts(self, index: int, start: datetime, end: datetime, cutoff: datetime) -> list[int] | None:
        """Summed counts (MODELLED_METRICS order) of events in [start, end) known at ``cutoff``.

        Events count at the start of their UTC hour; an hour that has not ended by ``cutoff`` has
        no data yet. None when no day in the window has any data.
        """
        total: list[int] | None = None
        day = start.date()
        one_day = timedelta(days=1)
        while _day_start(day) < end:
            counts = self._day(index, day)
            if counts is not None:
                ds = _day_start(day)
                if ds >= start and ds + one_day <= end and ds + one_day <= cutoff:
                    part: tuple[int, ...] | list[int] = counts
                else:
                    # Hours h0 <= h < h1 start inside [start, end) and have ended by the cutoff.
                    h0 = max(0, math.ceil((start - ds).total_seconds() / 3600))
                    h1 = self._hours_before(ds, end, cutoff)
                    if h1 <= h0:
                        day += one_day
                        continue
                    shares = self._hours(index, day)
                    part = [round(n * shares[h1]) - round(n * shares[h0]) for n in counts]
                if total is None:
                    total = [0] * len(MODELLED_METRICS)
                for k, value in enumerate(part):
                    total[k] += value
            day += one_day
        return total

    @staticmethod
    def _hours_before(ds: datetime, end: datetime, cutoff: datetime) -> int:
        """How many of the day's hours start before ``end`` and end by ``cutoff``."""
        starts_before_end = math.ceil((end - ds).total_seconds() / 3600)
        ended_by_cutoff = math.floor((cutoff - ds).total_seconds() / 3600)
        return max(0, min(24, starts_before_end, ended_by_cutoff))


# ===================================================================== queries
@dataclass(frozen=True)
class _Duration:
    months: int
    days: int
    seconds: int


@dataclass(frozen=True)
class AggregateQuery:
    """A validated aggregate query body."""

    start: datetime
    end: datetime
    buckets: tuple[tuple[datetime, datetime], ...]
    group_by: tuple[str, ...]
    filter: dict[str, Any] | None
    metrics: tuple[str, ...]
    page_size: int


def _parse_instant(text: str) -> datetime:
    # An end without an offset is UTC (x-simulator).
    moment = datetime.fromisoformat(text.replace("z", "Z"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _add_months(moment: datetime, months: int) -> datetime:
    year, month0 = divmod(moment.month - 1 + months, 12)
    year += moment.year
    # Clamp the day: Jan 31 + P1M is the last day of February.
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month0 + 1, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month0 + 1)


def cut_buckets(
    start: datetime, end: datetime, gran: _Duration | None, tz: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    """Buckets from ``start`` by ``gran``: calendar parts in ``tz`` (DST days are 23/25 h), then time."""
    if gran is None:
        return [(start, end)]
    local0 = start.astimezone(tz).replace(tzinfo=None)
    out: list[tuple[datetime, datetime]] = []
    cur, k = start, 0
    while cur < end:
        k += 1
        # Always from the first bucket's start, so month ends don't drift (Jan 31, Feb 28, Mar 31).
        wall = _add_months(local0, k * gran.months) + timedelta(days=k * gran.days)
        nxt = wall.replace(tzinfo=tz).astimezone(UTC) + timedelta(seconds=k * gran.seconds)
        if k == 1 and nxt > end:
            raise _bad("granularity is longer than the interval")
        if nxt <= cur:
            raise _bad("granularity does not advance the bucket")
        out.append((cur, min(nxt, end)))
        if len(out) > MAX_BUCKETS:
            raise _bad(f"granularity too fine: more than {MAX_BUCKETS} buckets")
        cur = nxt
    return out


def _check_predicates(predicates: Any, where: str) -> None:
    if not isinstance(predicates, list):
        raise _bad(f"{where}.predicates must be an array")
    for i, pred in enumerate(predicates):
        at = f"{where}.predicates[{i}]"
        if not isinstance(pred, dict):
            raise _bad(f"{at} must be an object")
        unknown = set(pred) - {"type", "dimension", "operator", "value", "range"}
        if unknown:
            raise _bad(f"{at}: unrecognized field {sorted(unknown)[0]!r}")
        if pred.get("type", "dimension") not in ("dimension", "property", "metric"):
            raise _bad(f"{at}.type is not one of dimension, property, metric")
        if pred.get("type", "dimension") != "dimension":
            raise _bad(f"{at}: the simulator only supports dimension predicates")
        dim = pred.get("dimension")
        if dim not in JOURNEY_DIMENSIONS:
            raise _bad(f"{at}.dimension is not a valid dimension: {dim!r}")
        if dim not in SUPPORTED_DIMENSIONS:
            raise _bad(f"{at}.dimension {dim} is not supported by the simulator ({', '.join(SUPPORTED_DIMENSIONS)})")
        operator = pred.get("operator", "matches")
        if operator not in ("matches", "exists", "notExists"):
            raise _bad(f"{at}.operator is not one of matches, exists, notExists")
        if operator == "matches" and not isinstance(pred.get("value"), str):
            raise _bad(f"{at}.value is required (a string) for operator matches")


def _check_filter(flt: Any) -> None:
    if not isinstance(flt, dict):
        raise _bad("filter must be an object")
    unknown = set(flt) - {"type", "clauses", "predicates"}
    if unknown:
        raise _bad(f"filter: unrecognized field {sorted(unknown)[0]!r}")
    if flt.get("type") not in ("and", "or"):
        raise _bad("filter.type is required: and | or")
    _check_predicates(flt.get("predicates", []), "filter")
    clauses = flt.get("clauses", [])
    if not isinstance(clauses, list):
        raise _bad("filter.clauses must be an array")
    for i, clause in enumerate(clauses):
        if not isinstance(clause, dict) or clause.get("type") not in ("and", "or") or "predicates" not in clause:
            raise _bad(f"filter.clauses[{i}] needs type (and | or) and predicates")
        _check_predicates(clause["predicates"], f"filter.clauses[{i}]")


def parse_query(body: Any, *, asynchronous: bool, max_sync_days: int) -> AggregateQuery:
    """Validate a JourneyAggregationQuery (or the async body); 400 on anything invalid."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    allowed = _QUERY_FIELDS | ({"pageSize"} if asynchronous else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(f"unrecognized field {unknown[0]!r}")
    interval = body.get("interval")
    if not isinstance(interval, str):
        raise _bad("interval is required (an ISO-8601 start/end string)")
    match = _INTERVAL_RE.match(interval)
    if not match:
        raise _bad(f"interval is not an ISO-8601 start/end: {interval!r}")
    try:
        start, end = _parse_instant(match.group(1)), _parse_instant(match.group(2))
    except ValueError:
        raise _bad(f"interval is not a valid date-time range: {interval!r}") from None
    if end <= start:
        raise _bad("interval end must be after its start")
    if not asynchronous and end - start > timedelta(days=max_sync_days):
        raise _bad(f"interval longer than {max_sync_days} days; split it or use the async jobs")
    metrics = body.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise _bad("metrics is required (a non-empty array)")
    for i, metric in enumerate(metrics):
        if metric not in JOURNEY_METRICS:
            raise _bad(f"metrics[{i}] is not a valid metric")
    tz_name = body.get("timeZone", "UTC")
    try:
        tz = ZoneInfo(tz_name) if isinstance(tz_name, str) and tz_name else None
    except (ZoneInfoNotFoundError, ValueError):
        tz = None
    if tz is None:
        raise _bad(f"timeZone is not an IANA time zone: {tz_name!r}")
    gran: _Duration | None = None
    raw_gran = body.get("granularity")
    if raw_gran is not None:
        found = _DURATION_RE.match(raw_gran) if isinstance(raw_gran, str) else None
        if not found:
            raise _bad(f"granularity is not an ISO-8601 duration: {raw_gran!r}")
        y, mo, w, d, h, mi, s = (int(part or 0) for part in found.groups())
        gran = _Duration(12 * y + mo, 7 * w + d, 3600 * h + 60 * mi + s)
        if gran == _Duration(0, 0, 0):
            raise _bad("granularity must be longer than zero")
    group_by = body.get("groupBy", [])
    if not isinstance(group_by, list):
        raise _bad("groupBy must be an array")
    for i, dim in enumerate(group_by):
        if dim not in JOURNEY_DIMENSIONS:
            raise _bad(f"groupBy[{i}] is not a valid dimension")
        if dim not in SUPPORTED_DIMENSIONS:
            raise _bad(f"groupBy[{i}] {dim} is not supported by the simulator ({', '.join(SUPPORTED_DIMENSIONS)})")
    if len(set(group_by)) != len(group_by):
        raise _bad("groupBy names a dimension twice")
    flt = body.get("filter")
    if flt is not None:
        _check_filter(flt)
    if not isinstance(body.get("flattenMultivaluedDimensions", False), bool):
        raise _bad("flattenMultivaluedDimensions must be a boolean")
    if body.get("alternateTimeDimension", "eventTime") != "eventTime":
        raise _bad("alternateTimeDimension must be eventTime")
    views = body.get("views", [])
    if not isinstance(views, list):
        raise _bad("views must be an array")
    if views:
        # rangeBound views need a timer metric; journey metrics are counts and values only.
        raise _bad("views[0]: range bound target metrics are limited to timer metrics")
    page_size = body.get("pageSize", RESULTS_DEFAULT_PAGE_SIZE)
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= RESULTS_MAX_PAGE_SIZE:
        raise _bad(f"pageSize must be an integer between 1 and {RESULTS_MAX_PAGE_SIZE}")
    buckets = cut_buckets(start, end, gran, tz)
    return AggregateQuery(start, end, tuple(buckets), tuple(group_by), flt, tuple(dict.fromkeys(metrics)), page_size)


def _dimension(m: _Map, dim: str) -> str:
    if dim == "journeyActionMapId":
        return m.id
    if dim == "journeyActionMapVersion":
        return str(m.version)
    return m.media_type


def _predicate_holds(m: _Map, pred: dict[str, Any]) -> bool:
    operator = pred.get("operator", "matches")
    if operator == "exists":
        return True  # every map has all three supported dimensions
    if operator == "notExists":
        return False
    return _dimension(m, pred["dimension"]) == pred.get("value")


def _filter_holds(m: _Map, flt: dict[str, Any] | None) -> bool:
    if flt is None:
        return True
    checks = [_predicate_holds(m, p) for p in flt.get("predicates", [])]
    for clause in flt.get("clauses", []):
        inner = [_predicate_holds(m, p) for p in clause["predicates"]]
        checks.append(all(inner) if clause["type"] == "and" else any(inner))
    if not checks:
        return True
    return all(checks) if flt["type"] == "and" else any(checks)


# ===================================================================== jobs and faults
@dataclass
class _Job:
    id: str
    client_id: str
    query: AggregateQuery
    submitted: datetime
    delay: float
    failed: bool = False
    stuck: bool = False
    expire_after_pages: int | None = None
    cancelled: bool = False
    expired_at: datetime | None = None
    pages_served: int = 0
    results: list[dict[str, Any]] | None = None

    @property
    def completed(self) -> datetime:
        return self.submitted + timedelta(seconds=self.delay)


@dataclass
class _Fault:
    kind: str
    remaining: int
    path_contains: str | None
    value: Any
    after_pages: int


_SHAPE_FAULTS = frozenset(
    {"non_numeric_count", "bucket_outside_interval", "group_without_map_id", "unknown_metric", "unknown_field"}
)
_JOB_FAULTS = frozenset({"failed_job", "expired_job", "stuck_job"})


# ===================================================================== the service
class JourneyService:
    """Handlers of the journey-aggregates contract, plus its jobs, faults and truth accessors."""

    def __init__(self, config: SimulatorConfig, now: Callable[[], datetime], cursors: CursorCodec) -> None:
        self.config = config
        self.world = JourneyWorld(config)
        self._now = now
        self._cursors = cursors
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._faults: list[_Fault] = []
        self._counter = 0

    # ------------------------------------------------------------- control
    def inject(
        self,
        kind: str,
        count: int = 1,
        path_contains: str | None = None,
        value: Any = None,
        after_pages: int = 0,
    ) -> None:
        """Queue a bad-input fault (see config.JOURNEY_FAULT_KINDS) for the next ``count`` answers."""
        if kind not in JOURNEY_FAULT_KINDS:
            raise ValueError(f"unknown journey fault kind {kind!r}; expected one of {JOURNEY_FAULT_KINDS}")
        if count < 1 or after_pages < 0:
            raise ValueError("count must be >= 1 and after_pages >= 0")
        with self._lock:
            self._faults.append(_Fault(kind, count, path_contains, value, after_pages))

    def clear_faults(self) -> None:
        """Forget queued journey faults."""
        with self._lock:
            self._faults.clear()

    def jobs(self) -> list[dict[str, Any]]:
        """Every job with its owner and current status (admin truth)."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [{"jobId": j.id, "clientId": j.client_id, **self._status(j)} for j in jobs]

    def _next(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def _take(self, kinds: frozenset[str], path: str) -> list[_Fault]:
        taken: list[_Fault] = []
        with self._lock:
            for fault in list(self._faults):
                if fault.kind not in kinds or (fault.path_contains is not None and fault.path_contains not in path):
                    continue
                if any(t.kind == fault.kind for t in taken):
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                taken.append(fault)
        return taken

    # ------------------------------------------------------------- dispatch
    def handle(
        self,
        method: str,
        op: str,
        params: dict[str, str],
        query: dict[str, list[str]],
        body: bytes,
        client_id: str,
        path: str,
    ) -> tuple[int, Any, dict[str, str]]:
        """Answer one authorized, rate-limited request: (status, JSON body or None, headers)."""
        try:
            if op == "listActionMaps":
                return 200, self._list_action_maps(query, path), {}
            if op == "query":
                return 200, self._query(self._json(body), path), {}
            if op == "submitJob":
                return 202, self._submit(self._json(body), client_id, path), {}
            job = self._job(params["id"], client_id)
            if op == "job" and method == "DELETE":
                return self._delete(job)
            if op == "job":
                return 200, self._status(job), {}
            return 200, self._results(job, query, path), {}
        except _Error as err:
            error = {"message": err.message, "code": err.code, "status": err.status, "contextId": ""}
            return err.status, error, err.headers

    @staticmethod
    def _json(body: bytes) -> Any:
        if not body.strip():
            raise _bad("a JSON request body is required")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _bad("the request body is not valid JSON") from None

    # ------------------------------------------------------------- action maps
    def _list_action_maps(self, query: dict[str, list[str]], path: str) -> dict[str, Any]:
        def one(name: str) -> str | None:
            values = query.get(name)
            if values and len(values) > 1:
                raise _bad(f"{name} given more than once")
            return values[0] if values else None

        def number(name: str, default: int, hi: int | None) -> int:
            raw = one(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise _bad(f"{name} must be an integer: {raw!r}") from None
            if value < 1 or (hi is not None and value > hi):
                raise _bad(f"{name} must be between 1 and {hi}" if hi else f"{name} must be >= 1")
            return value

        maps = self.world.action_maps()
        ids = [i for raw in query.get("actionMapIds", []) for i in raw.split(",") if i]
        sort_by, filter_field, filter_value = one("sortBy"), one("filterField"), one("filterValue")
        query_fields = [f for raw in query.get("queryFields", []) for f in raw.split(",") if f]
        query_value = one("queryValue")
        if (filter_field is None) != (filter_value is None):
            raise _bad("filterField and filterValue must be given together")
        if bool(query_fields) != (query_value is not None):
            raise _bad("queryFields and queryValue must be given together")
        extra: list[tuple[str, str]] = []
        if ids:
            paging = [n for n in ("pageNumber", "pageSize", "sortBy", "filterField", "queryFields") if n in query]
            if paging:
                raise _bad(f"actionMapIds cannot be combined with {paging[0]}")
            if len(ids) > 100:
                raise _bad("at most 100 actionMapIds per request")
            wanted = set(ids)
            items = [m for m in maps if m["id"] in wanted]
            size, number_ = max(1, len(ids)), 1
            extra = [("actionMapIds", i) for i in ids]
        else:
            size = number("pageSize", LISTING_DEFAULT_PAGE_SIZE, LISTING_MAX_PAGE_SIZE)
            number_ = number("pageNumber", 1, None)
            items = maps
            if filter_field is not None:
                if filter_field not in _LISTING_FIELDS:
                    raise _bad(f"filterField {filter_field!r} is not filterable")
                items = [m for m in items if _field_text(m, filter_field) == filter_value]
                extra += [("filterField", filter_field), ("filterValue", str(filter_value))]
            if query_fields:
                bad = [f for f in query_fields if f not in _LISTING_FIELDS]
                if bad:
                    raise _bad(f"queryFields {bad[0]!r} is not queryable")
                needle = str(query_value).lower()
                items = [m for m in items if any(needle in _field_text(m, f).lower() for f in query_fields)]
                extra += [("queryFields", f) for f in query_fields] + [("queryValue", str(query_value))]
            if sort_by:
                keys = [k.strip() for k in sort_by.split(",") if k.strip()]
                for key in reversed(keys):  # stable sorts, least significant key first
                    name = key.lstrip("-")
                    if name not in _LISTING_FIELDS:
                        raise _bad(f"sortBy {name!r} is not sortable")
                    items = sorted(items, key=lambda m, n=name: _sort_key(m, n), reverse=key.startswith("-"))
                extra.append(("sortBy", sort_by))
        total = len(items)
        page_count = math.ceil(total / size)
        page = items[(number_ - 1) * size : number_ * size]

        def uri(n: int) -> str:
            pairs = extra if ids else [("pageSize", str(size)), ("pageNumber", str(n)), *extra]
            return f"{ACTION_MAPS_PATH}?{urlencode(pairs)}"

        out: dict[str, Any] = {
            "entities": page,
            "pageSize": size,
            "pageNumber": number_,
            "total": total,
            "pageCount": page_count,
            "firstUri": uri(1),
            "selfUri": uri(number_),
            "lastUri": uri(max(1, page_count)),
        }
        if number_ < page_count:
            out["nextUri"] = uri(number_ + 1)  # relative to the API host, as Genesys sends it
        if number_ > 1:
            out["previousUri"] = uri(min(number_ - 1, max(1, page_count)))
        if page:
            for fault in self._take(frozenset({"unknown_field"}), path):
                page[0]["journeyPriority"] = fault.value if fault.value is not None else "high"
        return out

    # ------------------------------------------------------------- aggregates
    def _evaluate(self, q: AggregateQuery, cutoff: datetime) -> list[dict[str, Any]]:
        """The containers of an answer, in a fresh random order (order carries no meaning)."""
        wanted = [(metric, MODELLED_METRICS.index(metric)) for metric in q.metrics if metric in MODELLED_METRICS]
        groups: dict[tuple[str, ...], list[list[int] | None]] = {}
        for m in self.world.maps:
            if not wanted or not _filter_holds(m, q.filter):
                continue
            key = tuple(_dimension(m, d) for d in q.group_by)
            sums = groups.setdefault(key, [None] * len(q.buckets))
            for b, (a, z) in enumerate(q.buckets):
                counts = self.world.window_counts(m.index, a, z, cutoff)
                if counts is None:
                    continue
                if sums[b] is None:
                    sums[b] = counts
                else:
                    sums[b] = [x + y for x, y in zip(sums[b], counts, strict=True)]  # type: ignore[arg-type]
        rng = random.Random(f"{self.config.seed}:journey-shuffle:{self._next()}")
        results: list[dict[str, Any]] = []
        for key, sums in groups.items():
            data: list[dict[str, Any]] = []
            for (a, z), counts in zip(q.buckets, sums, strict=True):
                if counts is None:
                    continue
                metrics = [{"metric": name, "stats": {"count": counts[k]}} for name, k in wanted if counts[k] > 0]
                if not metrics:
                    continue  # a bucket with no metrics is omitted
                rng.shuffle(metrics)
                data.append({"interval": f"{iso_ms(a)}/{iso_ms(z)}", "metrics": metrics})
            if data:  # a group without buckets is omitted
                results.append({"group": dict(zip(q.group_by, key, strict=True)), "data": data})
        rng.shuffle(results)
        return results

    def _query(self, body: Any, path: str) -> dict[str, Any]:
        q = parse_query(body, asynchronous=False, max_sync_days=self.config.journey_max_sync_days)
        results = self._evaluate(q, self._now())
        cells = len(results) * len(q.buckets)
        if cells > self.config.journey_max_sync_cells:
            raise _Error(
                413,
                "result.too.large",
                f"the result has {len(results)} groups x {len(q.buckets)} buckets, more than "
                f"{self.config.journey_max_sync_cells}; use the async aggregate jobs",
            )
        return self._answer(results, q, path, frozenset(_SHAPE_FAULTS))

    def _answer(
        self, results: list[dict[str, Any]], q: AggregateQuery, path: str, kinds: frozenset[str]
    ) -> dict[str, Any]:
        if not results:
            return {}  # nothing matched at all
        out: dict[str, Any] = {"results": copy.deepcopy(results)}
        first = out["results"][0]
        for fault in self._take(kinds, path):
            bucket = first["data"][0]
            if fault.kind == "non_numeric_count":
                bucket["metrics"][0]["stats"]["count"] = "NaN" if fault.value is None else fault.value
            elif fault.kind == "bucket_outside_interval":
                a, z = q.buckets[0]
                bucket["interval"] = f"{iso_ms(a - (z - a))}/{iso_ms(a)}"
            elif fault.kind == "group_without_map_id":
                first["group"].pop("journeyActionMapId", None)
            elif fault.kind == "unknown_metric":
                name = UNKNOWN_METRIC if fault.value is None else str(fault.value)
                bucket["metrics"].append({"metric": name, "stats": {"count": 7}})
            elif fault.kind == "unknown_field":
                bucket["sampleRatio"] = 0.97 if fault.value is None else fault.value
        return out

    # ------------------------------------------------------------- jobs
    def _submit(self, body: Any, client_id: str, path: str) -> dict[str, Any]:
        q = parse_query(body, asynchronous=True, max_sync_days=self.config.journey_max_sync_days)
        now = self._now()
        with self._lock:
            running = [j for j in self._jobs.values() if j.client_id == client_id and self._state(j, now) in _RUNNING]
            if len(running) >= self.config.journey_max_concurrent_jobs:
                waits = [(j.completed - now).total_seconds() for j in running if not j.stuck]
                retry = max(1, math.ceil(min(waits))) if waits else 60
                raise _Error(
                    429,
                    "too.many.requests.concurrent.jobs",
                    f"{len(running)} aggregate jobs are still running for this client "
                    f"(limit {self.config.journey_max_concurrent_jobs}); retry in [{retry}] seconds",
                    {"Retry-After": str(retry)},
                )
            job = _Job(
                stable_uuid(self.config.seed, "journey-job", self._next()),
                client_id,
                q,
                now,
                self.config.journey_job_delay,
            )
            for fault in self._take(_JOB_FAULTS, path):
                if fault.kind == "failed_job":
                    job.failed = True
                elif fault.kind == "stuck_job":
                    job.stuck = True
                else:
                    job.expire_after_pages = fault.after_pages
            self._jobs[job.id] = job
        return {"jobId": job.id}

    def _job(self, job_id: str, client_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.client_id != client_id:  # another client's job is as good as unknown
            raise _Error(404, "not.found", f"aggregate job {job_id} not found")
        return job

    def _state(self, job: _Job, now: datetime) -> str:
        if job.cancelled:
            return "CANCELLED"
        if job.stuck or now < job.completed:
            return "QUEUED" if now < job.submitted + timedelta(seconds=job.delay / 4) else "PENDING"
        if job.failed:
            return "FAILED"
        if job.expired_at is not None or job.expire_after_pages == 0:
            return "EXPIRED"
        if now >= job.completed + timedelta(seconds=self.config.journey_job_ttl):
            return "EXPIRED"
        return "FULFILLED"

    def _status(self, job: _Job) -> dict[str, Any]:
        state = self._state(job, self._now())
        out: dict[str, Any] = {"state": state, "submissionDate": iso_ms(job.submitted)}
        if state == "FAILED":
            out["errorMessage"] = "query execution failed"
        if state in ("FULFILLED", "EXPIRED"):
            out["completionDate"] = iso_ms(job.completed)
            expiry = job.completed + timedelta(seconds=self.config.journey_job_ttl)
            if job.expire_after_pages == 0:
                expiry = job.completed
            out["expirationDate"] = iso_ms(job.expired_at or expiry)
        return out

    def _delete(self, job: _Job) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            job.cancelled = True
            job.results = None
        return 204, None, {}

    def _results(self, job: _Job, query: dict[str, list[str]], path: str) -> dict[str, Any]:
        state = self._state(job, self._now())
        if state in ("CANCELLED", "EXPIRED"):
            raise _Error(404, "not.found", f"aggregate job {job.id} is {state}; its results are gone")
        if state != "FULFILLED":
            raise _bad(f"aggregate job {job.id} is {state}; results are readable once it is FULFILLED")
        raw = query.get("cursor", [])
        offset = 0
        if len(raw) > 1:
            raise _bad("cursor given more than once")
        if raw and raw[0]:
            try:
                payload = self._cursors.decode(raw[0])
            except (ValueError, UnicodeDecodeError):
                raise _bad("invalid cursor") from None
            if payload.get("k") != "journey-job" or payload.get("j") != job.id or not isinstance(payload.get("o"), int):
                raise _bad("cursor does not belong to this job")
            offset = payload["o"]
        results = job.results
        if results is None:
            # A snapshot: counts known at completion time, later data needs a new job. Computed
            # outside the lock; of two first reads at once, the first one stored is kept.
            results = self._evaluate(job.query, job.completed)
            with self._lock:
                job.results = job.results or results
                results = job.results
        page = results[offset : offset + job.query.page_size]
        out = self._answer(page, job.query, path, frozenset(_SHAPE_FAULTS))
        nxt = offset + job.query.page_size
        repeat = bool(self._take(frozenset({"repeating_cursor"}), path))
        if repeat:
            nxt = offset  # the page hands back the cursor it was asked with: a client must notice
        if nxt < len(results) or repeat:
            out.setdefault("results", [])
            out["cursor"] = self._cursors.encode({"k": "journey-job", "j": job.id, "o": nxt})
        with self._lock:
            job.pages_served += 1
            if job.expire_after_pages is not None and 0 < job.expire_after_pages <= job.pages_served:
                job.expired_at = job.expired_at or self._now()
        return out

    # ------------------------------------------------------------- truth
    def expected_funnel(self, map_id: str, day: date) -> dict[str, int] | None:
        """The 11 funnel counts (zeros included) a whole-UTC-day bucket carries; None: no bucket."""
        return self.world.funnel(map_id, day)

    def expected_counts(self, map_id: str, day: date) -> dict[str, int] | None:
        """Every modelled metric of a whole UTC day, non-zero only (exactly what the wire sends)."""
        counts = self.world.day_counts(map_id, day)
        return None if counts is None else {k: v for k, v in counts.items() if v}


def _field(entity: dict[str, Any], dotted: str) -> Any:
    value: Any = entity
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _sort_key(entity: dict[str, Any], dotted: str) -> tuple[int, Any]:
    value = _field(entity, dotted)
    if value is None:
        return (0, "")
    # Numbers (and booleans) sort as numbers, so weight 10 comes after weight 9.
    return (1, value) if isinstance(value, int) else (2, str(value))


def _field_text(entity: dict[str, Any], dotted: str) -> str:
    value = _field(entity, dotted)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
