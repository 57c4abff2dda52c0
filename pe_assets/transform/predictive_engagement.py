"""The seed contract's landing envelopes -> table frames. Pure functions: no I/O, no Dagster, no clock.

Rules that matter downstream:
- ``step_sequence`` is a step's 1-based position across *all* pages of the day, in the order the
  API served them (not per page).
- A step without ``stepId`` or ``contactCount``, or whose values cannot be typed, is rejected with
  a reason and its raw JSON; it never reaches a fact table and never shifts other steps' positions.
- Null ``stepName``/``exitReason``/``averageScore`` stay NULL; an empty ``exitReason`` is NULL too
  (the contract says none is ever sent, and '' would break ``IS NULL`` filters).
- Unknown extra fields are tolerated and reported, never fatal.
- Rates, scores and metrics keep full 64-bit precision; ``model_version`` stays text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

from pe_assets.rules import outcomes_final
from pe_assets.schemas import TABLES
from pe_assets.transform import frame, to_utc_naive

# Fields the contract defines on a JourneyStep; anything else is schema drift.
KNOWN_STEP_FIELDS = frozenset({"stepId", "stepName", "contactCount", "conversionRate", "averageScore", "exitReason"})
SCORE_BUCKETS = ("0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0")


@dataclass
class JourneyTransformResult:
    """The frames built from a set of journey extractions, plus what was noticed on the way."""

    steps: pd.DataFrame
    rejected: pd.DataFrame
    unknown_fields: dict[str, int] = field(default_factory=dict)  # field name -> steps carrying it


def journey_frames(extractions: Iterable[Mapping[str, Any]], loaded_at: datetime) -> JourneyTransformResult:
    """Flatten journey envelopes (one per campaign and day) into step rows and rejected rows."""
    load_ts = to_utc_naive(loaded_at)
    step_rows: list[dict[str, Any]] = []
    rejected_rows: list[dict[str, Any]] = []
    unknown: dict[str, int] = {}
    for envelope in extractions:
        campaign_id = envelope["source_id"]
        day = pd.Timestamp(date.fromisoformat(envelope["day"]))
        extracted_at = to_utc_naive(envelope["extracted_at"])
        scorecard_id = (envelope.get("campaign") or {}).get("scorecardId")
        seen_step_ids: set[str] = set()
        position = 0
        for page in envelope["pages"]:
            for step in page.get("steps") or []:
                position += 1  # counts rejected steps too: positions are the API's order
                if isinstance(step, dict):
                    for name in step.keys() - KNOWN_STEP_FIELDS:
                        unknown[name] = unknown.get(name, 0) + 1
                row, reason = _step_row(step, seen_step_ids)
                if reason is not None:
                    rejected_rows.append(
                        {
                            "campaign_id": campaign_id,
                            "extraction_date": day,
                            "step_sequence": position,
                            "reason": reason,
                            "raw_step": json.dumps(step, ensure_ascii=False, sort_keys=True, allow_nan=True),
                            "extracted_at": extracted_at,
                            "load_timestamp": load_ts,
                        }
                    )
                    continue
                seen_step_ids.add(row["step_id"])
                step_rows.append(
                    {
                        "campaign_id": campaign_id,
                        "extraction_date": day,
                        **row,
                        "step_sequence": position,
                        "scorecard_id": scorecard_id,
                        "extracted_at": extracted_at,
                        "load_timestamp": load_ts,
                    }
                )
    return JourneyTransformResult(
        steps=frame("fact_journey_step", step_rows),
        rejected=frame("rejected_journey_step", rejected_rows),
        unknown_fields=unknown,
    )


def _step_row(step: Any, seen_step_ids: set[str]) -> tuple[dict[str, Any], str | None]:
    """The typed columns of one step, or the reason it is rejected."""
    if not isinstance(step, dict):
        return {}, "step is not a JSON object"
    step_id = step.get("stepId")
    if step_id is None or step_id == "":
        return {}, "missing stepId"
    if not isinstance(step_id, str):
        return {}, "stepId is not a string"
    if step_id in seen_step_ids:
        return {}, f"duplicate stepId {step_id!r} in the same day"
    contact_count = step.get("contactCount")
    if contact_count is None:
        return {}, "missing contactCount"
    if isinstance(contact_count, bool) or not isinstance(contact_count, int | float):
        return {}, "contactCount is not a number"
    if isinstance(contact_count, float) and (not math.isfinite(contact_count) or not contact_count.is_integer()):
        return {}, "contactCount is not a whole number"
    if contact_count < 0:
        return {}, "contactCount is negative"
    conversion_rate, reason = _rate(step.get("conversionRate"), "conversionRate", required=True)
    if reason:
        return {}, reason
    average_score, reason = _rate(step.get("averageScore"), "averageScore", required=False)
    if reason:
        return {}, reason
    step_name, reason = _text(step.get("stepName"), "stepName")
    if reason:
        return {}, reason
    exit_reason, reason = _text(step.get("exitReason"), "exitReason")
    if reason:
        return {}, reason
    return {
        "step_id": step_id,
        "step_name": step_name,
        "contact_count": int(contact_count),
        "conversion_rate": conversion_rate,
        "average_score": average_score,
        "exit_reason": exit_reason or None,
    }, None


def _rate(value: Any, name: str, *, required: bool) -> tuple[float | None, str | None]:
    if value is None:
        return None, (f"missing {name}" if required else None)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"{name} is not a finite number"
    if not 0.0 <= value <= 1.0:
        return None, f"{name} {value!r} is outside [0, 1]"
    return float(value), None


def _text(value: Any, name: str) -> tuple[str | None, str | None]:
    if value is None or isinstance(value, str):
        return value, None
    return None, f"{name} is not a string"


def scorecard_frames(extractions: Iterable[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every scorecard snapshot -> (performance history rows, score distribution rows).

    Each landed extraction is one snapshot; nothing is collapsed here, so the history keeps every
    model version and every provisional reading. ``pending_backfill`` is true when the snapshot
    was taken less than 48 hours after its day ended.
    """
    performance_rows: list[dict[str, Any]] = []
    bucket_rows: list[dict[str, Any]] = []
    for envelope in extractions:
        response = envelope["response"]
        day = date.fromisoformat(envelope["day"])
        extracted_at = to_utc_naive(envelope["extracted_at"])
        metrics = response["performanceMetrics"]
        model_version = str(response["modelVersion"])
        performance_rows.append(
            {
                "scorecard_id": envelope["source_id"],
                "extraction_date": pd.Timestamp(day),
                "scorecard_name": response.get("scorecardName"),
                "model_version": model_version,
                "retraining_timestamp": to_utc_naive(response.get("lastRetrainedDate")),
                "precision": metrics["precision"],
                "recall": metrics["recall"],
                "f1_score": metrics["f1Score"],
                "auc": metrics["auc"],
                "actual_conversion_rate": metrics["actualConversionRate"],
                "predicted_conversion_rate": metrics["predictedConversionRate"],
                "pending_backfill": not outcomes_final(day, extracted_at),
                "extracted_at": extracted_at,
            }
        )
        for bucket, count in (response.get("scoreDistribution") or {}).items():
            lower, upper = _bucket_bounds(bucket)
            bucket_rows.append(
                {
                    "scorecard_id": envelope["source_id"],
                    "extraction_date": pd.Timestamp(day),
                    "extracted_at": extracted_at,
                    "model_version": model_version,
                    "bucket": bucket,
                    "bucket_lower": lower,
                    "bucket_upper": upper,
                    "contact_count": count,
                }
            )
    return frame("fact_scorecard_performance", performance_rows), frame(
        "fact_scorecard_score_distribution", bucket_rows
    )


def _bucket_bounds(bucket: str) -> tuple[float, float]:
    try:
        lower_text, upper_text = bucket.split("-")
        return float(lower_text), float(upper_text)
    except ValueError:
        raise ValueError(f"score bucket {bucket!r} is not of the form 'lo-hi' such as '0.0-0.2'") from None


def campaign_dim_frame(listings: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Every campaign ever listed, in the state of the newest listing that showed it."""
    latest: dict[str, dict[str, Any]] = {}
    for envelope in sorted(listings, key=lambda e: to_utc_naive(e["extracted_at"])):
        listed_at = to_utc_naive(envelope["extracted_at"])
        for page in envelope["pages"]:
            for campaign in page["entities"]:
                latest[campaign["id"]] = {
                    "campaign_id": campaign["id"],
                    "campaign_name": campaign.get("name"),
                    "status": campaign["status"],
                    "scorecard_id": campaign.get("scorecardId"),
                    "created_date": to_utc_naive(campaign.get("createdDate")),
                    "updated_date": to_utc_naive(campaign.get("modifiedDate")),
                    "listed_at": listed_at,
                }
    rows = sorted(latest.values(), key=lambda row: row["campaign_id"])
    return frame("dim_predictive_campaign", rows)


def predictive_journey_frame(steps: pd.DataFrame, performance: pd.DataFrame, loaded_at: datetime) -> pd.DataFrame:
    """Each step row joined to the latest snapshot of its scorecard for the same day."""
    latest = (
        performance.sort_values("extracted_at")
        .drop_duplicates(["scorecard_id", "extraction_date"], keep="last")
        .loc[
            :,
            [
                "scorecard_id",
                "extraction_date",
                "precision",
                "recall",
                "f1_score",
                "actual_conversion_rate",
                "model_version",
                "pending_backfill",
            ],
        ]
    )
    joined = steps.drop(columns=["load_timestamp", "extracted_at"]).merge(
        latest, on=["scorecard_id", "extraction_date"], how="left", validate="many_to_one"
    )
    joined["load_timestamp"] = to_utc_naive(loaded_at)
    joined["pending_backfill"] = joined["pending_backfill"].astype("boolean")
    columns = TABLES["fact_predictive_journey"].column_names
    return frame(
        "fact_predictive_journey", joined[columns].sort_values(["campaign_id", "extraction_date", "step_sequence"])
    )
