"""The real Genesys source's landing envelopes -> table frames (journey aggregates and action maps).

The funnel of an action map and UTC day is the fixed dictionary ``FUNNEL_STEPS`` (Genesys'
lifecycle, not the order of the answer): five funnel stages, then six exits. For every (map, day)
group present in an answer there are exactly 11 rows:

* ``contact_count``: the metric's ``stats.count``; 0 when the metric is absent inside a present
  group and bucket (Genesys omits zeros). Maps without data on a day get no rows (Genesys omits
  empty groups; inventing zero rows would differ from the API).
* ``conversion_rate``: count / qualified for the same map and day (qualified itself 1.0); NULL when
  qualified is 0. The funnel is not strictly nested, so a rate may pass 1: kept, and reported by a
  WARN check, never clamped.
* ``average_score`` and ``scorecard_id``: NULL (Genesys has no scoring here; outcomes are withdrawn).

Answers are validated by ``pe_assets.client.journey_aggregates.funnel_counts`` (the one parser of an
aggregate answer), so a malformed landed file fails the transform with the same clear error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd

from pe_assets.client.journey_aggregates import FUNNEL_METRICS, funnel_counts
from pe_assets.transform import frame, to_utc_naive


@dataclass(frozen=True)
class FunnelStep:
    metric: str
    name: str
    exit_reason: str | None


# Each funnel metric's step name and exit reason (NULL for the five funnel stages).
_STEP_LABELS: dict[str, tuple[str, str | None]] = {
    "nWebActionsQualified": ("Qualified", None),
    "nWebActionsOffered": ("Offered", None),
    "nWebActionsAccepted": ("Accepted", None),
    "nWebActionsStarted": ("Started", None),
    "nWebActionsEngaged": ("Engaged", None),
    "nJourneyActionsBlocked": ("Blocked", "blocked"),
    "nWebActionsRejected": ("Rejected", "rejected"),
    "nWebActionsIgnored": ("Ignored", "ignored"),
    "nWebActionsTimedout": ("Timed out", "timedout"),
    "nWebActionsAbandoned": ("Abandoned", "abandoned"),
    "nWebActionsErrored": ("Errored", "errored"),
}
#: In ``FUNNEL_METRICS`` order (the client's, the one place it is written): step_sequence = index + 1.
FUNNEL_STEPS: tuple[FunnelStep, ...] = tuple(FunnelStep(m, *_STEP_LABELS[m]) for m in FUNNEL_METRICS)
QUALIFIED = FUNNEL_STEPS[0].metric


def journey_step_frame(chunks: Iterable[tuple[Mapping[str, Any], Iterable[date]]], loaded_at: datetime) -> pd.DataFrame:
    """``fact_journey_step`` rows for the given days of each landed aggregate chunk.

    ``chunks``: (envelope of a landed chunk, the days to take from it). An envelope holds the
    chunk's ``start``/``end`` (ISO days, ``[start, end)``) and its raw ``responses``.
    """
    load_timestamp = to_utc_naive(loaded_at)
    rows: list[dict[str, Any]] = []
    for envelope, days in chunks:
        wanted = set(days)
        counts = funnel_counts(
            envelope["responses"],
            date.fromisoformat(envelope["start"]),
            date.fromisoformat(envelope["end"]),
            endpoint=f"landed {envelope.get('source_id', 'chunk')}",
        )
        extracted_at = to_utc_naive(envelope["extracted_at"])
        for (map_id, day), metrics in sorted(counts.items()):
            if day not in wanted:
                continue
            qualified = metrics.get(QUALIFIED, 0)
            for sequence, step in enumerate(FUNNEL_STEPS, start=1):
                count = metrics.get(step.metric, 0)
                rows.append(
                    {
                        "campaign_id": map_id,
                        "extraction_date": pd.Timestamp(day),
                        "step_id": step.metric,
                        "step_name": step.name,
                        "step_sequence": sequence,
                        "contact_count": count,
                        "conversion_rate": count / qualified if qualified else None,
                        "average_score": None,
                        "exit_reason": step.exit_reason,
                        "scorecard_id": None,
                        "extracted_at": extracted_at,
                        "load_timestamp": load_timestamp,
                    }
                )
    return frame("fact_journey_step", rows)


def action_map_frames(listings: Iterable[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(``dim_predictive_campaign``, ``dim_action_map``): every action map ever listed, newest state.

    Status is 'active' or 'paused' from ``isActive``; ``scorecard_id`` is NULL (no equivalent).
    """
    latest: dict[str, tuple[dict[str, Any], pd.Timestamp | None]] = {}
    for envelope in sorted(listings, key=lambda e: to_utc_naive(e["extracted_at"])):
        listed_at = to_utc_naive(envelope["extracted_at"])
        for page in envelope["pages"]:
            for action_map in page["entities"]:
                latest[action_map["id"]] = (action_map, listed_at)
    campaigns: list[dict[str, Any]] = []
    maps: list[dict[str, Any]] = []
    for map_id, (action_map, listed_at) in sorted(latest.items()):
        action = action_map.get("action") or {}
        activation = action_map.get("activation") or {}
        segments = action_map.get("triggerWithSegments")
        campaigns.append(
            {
                "campaign_id": map_id,
                "campaign_name": action_map.get("displayName"),
                "status": "active" if action_map.get("isActive") else "paused",
                "scorecard_id": None,
                "created_date": to_utc_naive(action_map.get("createdDate")),
                "updated_date": to_utc_naive(action_map.get("modifiedDate")),
                "listed_at": listed_at,
            }
        )
        maps.append(
            {
                "action_map_id": map_id,
                "display_name": action_map.get("displayName"),
                "is_active": bool(action_map.get("isActive")),
                "version": action_map.get("version"),
                "media_type": action.get("mediaType"),
                "action_template_id": (action.get("actionTemplate") or {}).get("id"),
                "activation_type": activation.get("type"),
                "activation_delay_seconds": activation.get("delayInSeconds"),
                "weight": action_map.get("weight"),
                "ignore_frequency_cap": action_map.get("ignoreFrequencyCap"),
                "trigger_segment_ids": json.dumps(segments) if segments is not None else None,
                "start_date": to_utc_naive(action_map.get("startDate")),
                "end_date": to_utc_naive(action_map.get("endDate")),
                "created_date": to_utc_naive(action_map.get("createdDate")),
                "modified_date": to_utc_naive(action_map.get("modifiedDate")),
                "listed_at": listed_at,
            }
        )
    return frame("dim_predictive_campaign", campaigns), frame("dim_action_map", maps)
