"""The simulator's seeded world: campaigns, scorecards, daily funnels and model performance.

Everything is a pure function of the seed (plus, for scorecards, the model version and whether
the window's outcomes are still provisional), so two worlds built from the same seed answer
identically. Random streams are ``random.Random`` seeded with strings, which Python hashes with
SHA-512 - stable across processes, unlike ``hash()``.

Roles (picked by a seeded permutation of the campaign indices):

* ``big``: active, ``big_campaign_steps`` steps every day (needs two pages at pageSize 1000).
* ``damaged``: active; on every day its 2nd step (1-based) has no ``stepId`` and its 3rd step
  has no ``contactCount``.
* ``paused``: one paused campaign (more may be paused in large worlds).
* ``archived``: archived since 2023; its analytics always answer 404.
* ``unscored``: active, ``scorecardId: null``.

The other campaigns are active. Every campaign except ``unscored`` gets a scorecard round-robin,
so scorecards are shared by two or more campaigns.
"""

from __future__ import annotations

import copy
import hashlib
import random
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pe_dev.simulator.config import SimulatorConfig

SCORE_BUCKETS: tuple[str, ...] = ("0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0")
#: outcomes of a window become final this long after the window ends
PROVISIONAL_PERIOD = timedelta(hours=48)

_FUNNEL_TEMPLATE: tuple[tuple[str, str], ...] = (
    ("web_visit", "Web Visit"),
    ("engagement_offer", "Engagement Offered"),
    ("chat_accepted", "Chat Accepted"),
    ("content_offer", "Content Offer Viewed"),
    ("outbound_call", "Outbound Attempt"),
    ("connected", "Agent Connected"),
    ("qualified", "Qualified"),
    ("proposal_sent", "Proposal Sent"),
    ("negotiation", "Negotiation"),
)
_EXIT_REASONS: tuple[str | None, ...] = (
    "no_answer",
    "disconnected",
    "declined",
    "timeout",
    "abandoned",
    "opted_out",
    None,
)
_THEMES = ("Spring", "Summer", "Autumn", "Winter", "Retention", "Win-back", "Upsell", "Onboarding")
_CHANNELS = ("Web Chat", "Outbound", "Callback", "Content Offer", "Email Nurture", "Renewal")
_MODELS = ("Lead Propensity", "Churn Risk", "Upsell Propensity", "Renewal Likelihood", "Chat Acceptance")


def rng_for(*parts: object) -> random.Random:
    """A random stream determined only by ``parts`` (stable across processes)."""
    return random.Random(":".join(str(p) for p in parts))


def stable_uuid(*parts: object) -> str:
    """A version-4-shaped UUID derived from ``parts``."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def iso_z(moment: datetime) -> str:
    """Format an aware datetime as UTC ISO 8601 with a ``Z`` suffix."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def day_start(day: date) -> datetime:
    """UTC midnight starting ``day``."""
    return datetime.combine(day, time(0), tzinfo=UTC)


@dataclass(frozen=True)
class StepDef:
    """The fixed part of one funnel step of a campaign (counts vary per day)."""

    step_id: str
    name: str | None
    exit_reason: str | None
    extra: dict[str, Any]
    #: how much of the previous step's contacts typically reach this one
    keep_low: float
    keep_high: float
    drop_step_id: bool = False
    drop_contact_count: bool = False


@dataclass
class CampaignState:
    """A campaign as the simulator holds it (mutable: status, modifiedDate)."""

    id: str
    name: str
    status: str
    scorecard_id: str | None
    created: datetime
    modified: datetime
    base_volume: int
    steps: list[StepDef]
    role: str

    def to_json(self) -> dict[str, Any]:
        """The contract's Campaign object."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "scorecardId": self.scorecard_id,
            "createdDate": iso_z(self.created),
            "modifiedDate": iso_z(self.modified),
            "selfUri": f"/api/v2/predictive-engagement/campaigns/{self.id}",
        }


@dataclass
class ScorecardState:
    """A scorecard (propensity model) and its current version."""

    id: str
    name: str
    version: int
    last_retrained: datetime
    campaign_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The contract's Scorecard object."""
        return {
            "id": self.id,
            "name": self.name,
            "modelVersion": str(self.version),
            "lastRetrainedDate": iso_z(self.last_retrained),
            "selfUri": f"/api/v2/predictive-engagement/scorecards/{self.id}",
        }


@dataclass(frozen=True)
class DayJourney:
    """One campaign-day: the steps as served (canonical order) and the day's metrics."""

    steps: list[dict[str, Any]]
    metrics: dict[str, Any]
    #: contact counts including those a damaged step hides (for on-the-fly sums)
    counts: list[int]
    scores: list[float | None]


@dataclass(frozen=True)
class _ScoreDay:
    """Confusion-matrix totals of one scorecard-day under one model version."""

    contacts: int
    predicted_pos: float
    actual_pos: float
    true_pos: float
    auc: float
    distribution: dict[str, int]


class World:
    """The seeded data plus the little mutable state (statuses, model versions).

    Thread-safe: mutations and cache access hold ``self.lock``.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.seed = config.seed
        self.lock = threading.RLock()
        self._journey_cache: OrderedDict[tuple[str, date], DayJourney] = OrderedDict()
        self.campaigns: dict[str, CampaignState] = {}
        self.scorecards: dict[str, ScorecardState] = {}
        self.roles: dict[str, str] = {}
        self._build()

    # ----------------------------------------------------------------- building
    def _build(self) -> None:
        seed, n = self.seed, self.config.n_campaigns
        order = list(range(n))
        rng_for(seed, "roles").shuffle(order)
        role_of = {order[0]: "big", order[1]: "damaged", order[2]: "paused", order[3]: "archived"}
        role_of[order[4]] = "unscored"

        n_sc = self.config.scorecard_count
        sc_rng = rng_for(seed, "scorecards")
        used_names: set[str] = set()
        for k in range(n_sc):
            name = f"{sc_rng.choice(_MODELS)} Model Q{k % 4 + 1}"
            while name in used_names:
                name += " v2"
            used_names.add(name)
            retrained = datetime(2023, 11, 1, tzinfo=UTC) + timedelta(seconds=sc_rng.randrange(0, 60 * 86400))
            sc = ScorecardState(
                id=stable_uuid(seed, "scorecard", k),
                name=name,
                version=sc_rng.randint(1, 9),
                last_retrained=retrained,
            )
            self.scorecards[sc.id] = sc
        sc_ids = list(self.scorecards)

        used_names = set()
        scored_position = 0
        for i in range(n):
            rng = rng_for(seed, "campaign", i)
            role = role_of.get(i, "normal")
            cid = stable_uuid(seed, "campaign", i)
            name = f"{rng.choice(_THEMES)} {rng.choice(_CHANNELS)}"
            if name in used_names:
                name = f"{name} {i + 1:02d}"
            used_names.add(name)
            created = datetime(2023, 1, 2, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 240 * 86400))
            latest = datetime(2023, 12, 31, tzinfo=UTC)
            modified = created + timedelta(seconds=rng.randrange(3600, int((latest - created).total_seconds())))
            status = {"paused": "paused", "archived": "archived"}.get(role, "active")
            if role == "normal" and n > 12 and rng.random() < 0.1:
                status = "paused"  # large worlds get a few more paused campaigns
            scorecard_id = None
            if role != "unscored":
                scorecard_id = sc_ids[scored_position % len(sc_ids)]
                scored_position += 1
            camp = CampaignState(
                id=cid,
                name=name,
                status=status,
                scorecard_id=scorecard_id,
                created=created,
                modified=modified,
                base_volume=rng.randint(20_000, 60_000) if role == "big" else rng.randint(800, 15_000),
                steps=self._step_defs(i, role),
                role=role,
            )
            self.campaigns[cid] = camp
            if scorecard_id:
                self.scorecards[scorecard_id].campaign_ids.append(cid)
            if role != "normal":
                self.roles[role] = cid

    def _step_defs(self, index: int, role: str) -> list[StepDef]:
        rng = rng_for(self.seed, "stepdefs", index)
        defs: list[StepDef] = []
        if role == "big":
            total = self.config.big_campaign_steps
            for k in range(1, total + 1):
                # Fixed patterns so nulls and extras are guaranteed, not merely likely.
                defs.append(
                    StepDef(
                        step_id="initial_score" if k == 1 else f"touchpoint_{k:04d}",
                        name=None if k % 10 == 7 else ("Lead Scored" if k == 1 else f"Touchpoint {k}"),
                        exit_reason=None if k in (1, total) or k % 3 == 0 else rng.choice(_EXIT_REASONS[:-1]),
                        extra={"experimentalBucket": "ab"[k % 2]} if k % 25 == 3 else {},
                        keep_low=0.996,
                        keep_high=1.0,
                    )
                )
            return defs
        middle_count = rng.randint(2, 8)
        middle = sorted(rng.sample(range(len(_FUNNEL_TEMPLATE)), middle_count))
        chosen = [("initial_score", "Lead Scored")]
        chosen += [_FUNNEL_TEMPLATE[m] for m in middle]
        chosen.append(("converted", "Sale Closed"))
        last = len(chosen) - 1
        for pos, (step_id, step_name) in enumerate(chosen):
            name: str | None = step_name
            if 0 < pos and rng.random() < 0.12:
                name = None
            extra: dict[str, Any] = {}
            if rng.random() < 0.2:
                extra["experimentalBucket"] = rng.choice("ab")
            defs.append(
                StepDef(
                    step_id=step_id,
                    name=name,
                    exit_reason=None if pos in (0, last) else rng.choice(_EXIT_REASONS),
                    extra=extra,
                    keep_low=0.5,
                    keep_high=0.97,
                    drop_step_id=role == "damaged" and pos == 1,
                    drop_contact_count=role == "damaged" and pos == 2,
                )
            )
        return defs

    # ----------------------------------------------------------------- journeys
    def journey(self, campaign_id: str, day: date) -> DayJourney:
        """The campaign's funnel for one UTC day (cached; callers must not mutate it)."""
        key = (campaign_id, day)
        with self.lock:
            hit = self._journey_cache.get(key)
            if hit is not None:
                self._journey_cache.move_to_end(key)
                return hit
        result = self._make_journey(self.campaigns[campaign_id], day)
        with self.lock:
            self._journey_cache[key] = result
            while len(self._journey_cache) > 256:
                self._journey_cache.popitem(last=False)
        return result

    def _make_journey(self, camp: CampaignState, day: date) -> DayJourney:
        if day_start(day) + timedelta(days=1) <= camp.created:
            # No contacts before the campaign existed.
            return DayJourney([], _metrics([], []), [], [])
        rng = rng_for(self.seed, "journey", camp.id, day.isoformat())
        weekday_factor = 0.7 if day.weekday() >= 5 else 1.0
        first = max(1, int(camp.base_volume * weekday_factor * rng.uniform(0.8, 1.2)))
        counts: list[int] = []
        scores: list[float | None] = []
        steps: list[dict[str, Any]] = []
        prev = first
        score_base = rng.uniform(0.35, 0.6)
        n_steps = len(camp.steps)
        for pos, sd in enumerate(camp.steps):
            if pos == 0:
                count = first
            else:
                count = round(prev * rng.uniform(sd.keep_low, sd.keep_high))
                if rng.random() < 0.05:
                    # "non-increasing-ish": a re-entry bump now and then, never above the entry step
                    count = min(first, int(prev * 1.02) + 1)
            prev = count
            score: float | None = round(min(1.0, score_base + 0.4 * pos / max(1, n_steps - 1)), 4)
            if rng.random() < 0.05 or (n_steps > 100 and pos % 50 == 13):
                score = None
            counts.append(count)
            scores.append(score)
            step: dict[str, Any] = {}
            if not sd.drop_step_id:
                step["stepId"] = sd.step_id
            step["stepName"] = sd.name
            if not sd.drop_contact_count:
                step["contactCount"] = count
            step["conversionRate"] = round(count / first, 4)
            step["averageScore"] = score
            step["exitReason"] = sd.exit_reason
            step.update(sd.extra)
            steps.append(step)
        return DayJourney(steps, _metrics(counts, scores), counts, scores)

    def window_journey(self, campaign_id: str, start: datetime, end: datetime) -> DayJourney:
        """A funnel for an arbitrary window: each overlapped day weighted by its covered share."""
        camp = self.campaigns[campaign_id]
        totals = [0.0] * len(camp.steps)
        score_sums = [0.0] * len(camp.steps)
        score_weights = [0.0] * len(camp.steps)
        any_day = False
        day = start.astimezone(UTC).date()
        while day_start(day) < end:
            lo = max(start, day_start(day))
            hi = min(end, day_start(day) + timedelta(days=1))
            share = (hi - lo).total_seconds() / 86400
            dj = self.journey(campaign_id, day)
            if dj.counts and share > 0:
                any_day = True
                for pos, (count, score) in enumerate(zip(dj.counts, dj.scores, strict=True)):
                    totals[pos] += count * share
                    if score is not None:
                        score_sums[pos] += score * count * share
                        score_weights[pos] += count * share
            day += timedelta(days=1)
        if not any_day:
            return DayJourney([], _metrics([], []), [], [])
        counts = [round(t) for t in totals]
        counts = [min(c, counts[0]) for c in counts]
        scores: list[float | None] = [
            round(s / w, 4) if w > 0 else None for s, w in zip(score_sums, score_weights, strict=True)
        ]
        first = counts[0]
        steps: list[dict[str, Any]] = []
        for sd, count, score in zip(camp.steps, counts, scores, strict=True):
            step: dict[str, Any] = {}
            if not sd.drop_step_id:
                step["stepId"] = sd.step_id
            step["stepName"] = sd.name
            if not sd.drop_contact_count:
                step["contactCount"] = count
            step["conversionRate"] = round(count / first, 4) if first else 0.0
            step["averageScore"] = score
            step["exitReason"] = sd.exit_reason
            step.update(sd.extra)
            steps.append(step)
        return DayJourney(steps, _metrics(counts, scores), counts, scores)

    def expected_steps(self, campaign_id: str, day: date) -> list[dict[str, Any]]:
        """A deep copy of the day's steps in canonical order."""
        return copy.deepcopy(self.journey(campaign_id, day).steps)

    # --------------------------------------------------------------- scorecards
    def _score_day(self, scorecard_id: str, day: date, version: int, provisional: bool) -> _ScoreDay:
        base = rng_for(self.seed, "scoreday", scorecard_id, day.isoformat())
        contacts = base.randint(2_000, 30_000)
        actual = base.uniform(0.12, 0.4)
        if provisional:
            # Outcomes not yet backfilled: fewer conversions observed so far.
            actual *= rng_for(self.seed, "provisional", scorecard_id, day.isoformat()).uniform(0.6, 0.92)
        model = rng_for(self.seed, "model", scorecard_id, day.isoformat(), version)
        predicted = min(0.95, max(0.02, base.uniform(0.12, 0.4) * model.uniform(0.8, 1.25)))
        quality = model.uniform(0.8, 1.0)
        auc = model.uniform(0.68, 0.95)
        weights = [model.uniform(0.5, 2.0) for _ in SCORE_BUCKETS]
        total_w = sum(weights)
        dist: dict[str, int] = {}
        left = contacts
        for key, w in zip(SCORE_BUCKETS[:-1], weights[:-1], strict=True):
            dist[key] = int(contacts * w / total_w)
            left -= dist[key]
        dist[SCORE_BUCKETS[-1]] = left
        pp, ap = predicted * contacts, actual * contacts
        # TP = q * PP*AP/(PP+AP) <= min(PP, AP) for q <= 1; unlike q*min(PP, AP) it moves both
        # precision and recall when the observed outcomes (AP) change.
        return _ScoreDay(contacts, pp, ap, quality * pp * ap / (pp + ap), auc, dist)

    def scorecard_analytics(self, scorecard_id: str, start: datetime, end: datetime, now: datetime) -> dict[str, Any]:
        """The ScorecardAnalytics body for a window of whole UTC days, as of ``now``."""
        sc = self.scorecards[scorecard_id]
        with self.lock:
            version, retrained = sc.version, sc.last_retrained
        days: list[_ScoreDay] = []
        day = start.date()
        while day_start(day) < end:
            provisional = now < day_start(day) + timedelta(days=1) + PROVISIONAL_PERIOD
            days.append(self._score_day(scorecard_id, day, version, provisional))
            day += timedelta(days=1)
        contacts = sum(d.contacts for d in days)
        pp = sum(d.predicted_pos for d in days)
        ap = sum(d.actual_pos for d in days)
        tp = sum(d.true_pos for d in days)
        precision = tp / pp if pp else 0.0
        recall = tp / ap if ap else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        auc = sum(d.auc * d.contacts for d in days) / contacts if contacts else 0.0
        dist = {key: sum(d.distribution[key] for d in days) for key in SCORE_BUCKETS}
        return {
            "scorecardId": sc.id,
            "scorecardName": sc.name,
            "modelVersion": str(version),
            "lastRetrainedDate": iso_z(retrained),
            "dateFrom": iso_z(start),
            "dateTo": iso_z(end),
            "performanceMetrics": {
                "precision": _unit(precision),
                "recall": _unit(recall),
                "f1Score": _unit(f1),
                "auc": _unit(auc),
                "actualConversionRate": _unit(ap / contacts if contacts else 0.0),
                "predictedConversionRate": _unit(pp / contacts if contacts else 0.0),
            },
            "scoreDistribution": dist,
        }

    # ---------------------------------------------------------------- mutations
    def archive(self, campaign_id: str, when: datetime) -> None:
        """Archive a campaign (idempotent)."""
        with self.lock:
            camp = self.campaigns[campaign_id]
            if camp.status != "archived":
                camp.status = "archived"
                camp.modified = max(camp.modified, when)

    def retrain(self, scorecard_id: str, when: datetime) -> ScorecardState:
        """Raise the model version; past windows are recomputed with the new version."""
        with self.lock:
            sc = self.scorecards[scorecard_id]
            sc.version += 1
            sc.last_retrained = when
            return sc

    def campaign_list(self) -> list[dict[str, Any]]:
        """All campaigns in canonical order (createdDate, id)."""
        with self.lock:
            ordered = sorted(self.campaigns.values(), key=lambda c: (c.created, c.id))
            return [c.to_json() for c in ordered]

    def scorecard_list(self) -> list[dict[str, Any]]:
        """All scorecards in canonical order (name, id)."""
        with self.lock:
            ordered = sorted(self.scorecards.values(), key=lambda s: (s.name, s.id))
            return [s.to_json() for s in ordered]


def _unit(value: float) -> float:
    """Round to 4 places and clamp into [0, 1]."""
    return round(min(1.0, max(0.0, value)), 4)


def _metrics(counts: list[int], scores: list[float | None]) -> dict[str, Any]:
    if not counts:
        return {"totalContacts": 0, "totalConverted": 0, "overallConversionRate": 0.0, "averageScore": None}
    weighted = [(s, c) for s, c in zip(scores, counts, strict=True) if s is not None and c > 0]
    weight = sum(c for _, c in weighted)
    avg = round(sum(s * c for s, c in weighted) / weight, 4) if weight else None
    total, converted = counts[0], counts[-1]
    return {
        "totalContacts": total,
        "totalConverted": converted,
        "overallConversionRate": round(converted / total, 4) if total else 0.0,
        "averageScore": avg,
    }
