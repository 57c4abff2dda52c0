"""Model drift per scorecard and UTC day. Pure functions: no I/O, no Dagster, no clock.

Only FINAL snapshots count: for each scorecard-day, the latest snapshot (by ``extracted_at``) whose
``pending_backfill`` is false. Provisional snapshots carry outcomes that are still being
backfilled (up to 48 h after the day ends), so their conversion rates, precision and recall are
biased low and would read as drift. A scorecard-day without a final snapshot gets **no row**; it
gets one when a later re-extraction (the 06:00 late-data run, the final-outcomes sensor) lands a
final snapshot and the asset is re-materialized for that day.

Metrics of day D for one scorecard (``B`` = the days D-28 .. D-1 that have a final snapshot):

``calibration_gap``
    ``|predicted_conversion_rate - actual_conversion_rate|`` of D's final snapshot.
``psi`` (population stability index of the score distribution)
    ``p_i`` = D's share of contacts in bucket i; ``q_i`` = the baseline's share, from the bucket
    counts of every day in ``B`` summed (a pooled distribution, so busy days weigh more). Both are
    floored at ``EPSILON`` (1e-4) so an empty bucket does not give ``ln(0)``; no renormalisation.
    ``PSI = sum_i (p_i - q_i) * ln(p_i / q_i)``. NULL when ``B`` or D has no counted contacts.
    Rule of thumb: < 0.1 stable, 0.1-0.2 moderate shift, > 0.2 significant shift.
``precision_delta``, ``recall_delta``
    D's value minus the median of the values on the days of ``B`` (NULL when ``B`` is empty).
``baseline_days``
    ``len(B)``, 0..28: few baseline days make PSI and the deltas noisy (the checks ignore rows
    with fewer than ``MIN_BASELINE_DAYS``).

The baseline uses each day's final snapshot whatever its ``model_version``: a retraining that
moves the score distribution shows up as drift, which is what the monitoring is for.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta

import pandas as pd

BASELINE_DAYS = 28
EPSILON = 1e-4
#: Rows with fewer baseline days are written but not judged by the PSI and delta checks.
MIN_BASELINE_DAYS = 7

DRIFT_COLUMNS = (
    "scorecard_id",
    "extraction_date",
    "model_version",
    "snapshot_extracted_at",
    "precision",
    "recall",
    "predicted_conversion_rate",
    "actual_conversion_rate",
    "calibration_gap",
    "psi",
    "precision_baseline_median",
    "recall_baseline_median",
    "precision_delta",
    "recall_delta",
    "baseline_days",
    "load_timestamp",
)


def calibration_gap(predicted: float, actual: float) -> float:
    """``|predicted - actual|`` conversion rate."""
    return abs(predicted - actual)


def proportions(counts: Mapping[str, float], buckets: Iterable[str], epsilon: float = EPSILON) -> dict[str, float]:
    """Each bucket's share of the total, floored at ``epsilon``; buckets absent from ``counts`` are 0."""
    total = sum(counts.values())
    if total <= 0:
        raise ValueError("no contacts to take proportions of")
    return {bucket: max(counts.get(bucket, 0) / total, epsilon) for bucket in buckets}


def population_stability_index(
    current: Mapping[str, float], baseline: Mapping[str, float], epsilon: float = EPSILON
) -> float | None:
    """``sum_i (p_i - q_i) * ln(p_i / q_i)`` over the union of buckets; None if either side is empty.

    ``current`` and ``baseline`` are contact counts per bucket (not proportions).
    """
    if sum(current.values()) <= 0 or sum(baseline.values()) <= 0:
        return None
    buckets = sorted(set(current) | set(baseline))
    p = proportions(current, buckets, epsilon)
    q = proportions(baseline, buckets, epsilon)
    return sum((p[b] - q[b]) * math.log(p[b] / q[b]) for b in buckets)


def median_delta(value: float, history: Sequence[float]) -> tuple[float | None, float | None]:
    """``(median(history), value - median(history))``; ``(None, None)`` for an empty history."""
    if not history:
        return None, None
    median = float(statistics.median(history))
    return median, value - median


def final_snapshots(performance: pd.DataFrame) -> pd.DataFrame:
    """The latest non-``pending_backfill`` snapshot of each scorecard-day (fact_scorecard_performance rows)."""
    final = performance[~performance["pending_backfill"].astype(bool)]
    return (
        final.sort_values(["scorecard_id", "extraction_date", "extracted_at"])
        .drop_duplicates(["scorecard_id", "extraction_date"], keep="last")
        .reset_index(drop=True)
    )


def drift_frame(
    performance: pd.DataFrame,
    distribution: pd.DataFrame,
    days: Iterable[date],
    *,
    loaded_at: datetime,
    baseline_days: int = BASELINE_DAYS,
) -> pd.DataFrame:
    """One drift row per scorecard and day of ``days`` that has a final snapshot.

    ``performance`` and ``distribution`` are fact_scorecard_performance and
    fact_scorecard_score_distribution rows covering ``days`` and the ``baseline_days`` before the
    first of them (more is fine). Columns are ``DRIFT_COLUMNS``, in that order.
    """
    final = final_snapshots(performance)
    final = final.assign(day=pd.to_datetime(final["extraction_date"]).dt.date)
    counts = _bucket_counts(final, distribution)
    load_ts = _naive_utc(loaded_at)
    # Plain lists per scorecard, in day order (``final`` is sorted so): a day's baseline is a slice
    # found by bisection. Indexing a frame per scorecard-day cost ~0.5 ms each (24 s for a year).
    snapshots_by_scorecard: dict[str, list[dict[str, object]]] = {}
    for snapshot in final.to_dict("records"):
        snapshots_by_scorecard.setdefault(str(snapshot["scorecard_id"]), []).append(snapshot)
    days_by_scorecard = {sid: [s["day"] for s in snapshots] for sid, snapshots in snapshots_by_scorecard.items()}
    # Each scorecard's metrics as floats once, in day order: a baseline is a slice, not a new list per day.
    metric_by_scorecard = {
        (sid, metric): [float(s[metric]) for s in snapshots]
        for sid, snapshots in snapshots_by_scorecard.items()
        for metric in ("precision", "recall")
    }
    # Running totals of each scorecard's bucket counts, in day order: a baseline's pooled counts are
    # one difference, not a sum over its 28 days (counts are whole numbers: the difference is exact).
    running_by_scorecard = {
        sid: _running_totals([counts.get((sid, s["day"]), {}) for s in snapshots])
        for sid, snapshots in snapshots_by_scorecard.items()
    }
    rows: list[dict[str, object]] = []
    for day in sorted(set(days)):
        for scorecard_id in sorted(snapshots_by_scorecard):
            snapshot_days = days_by_scorecard[scorecard_id]
            today_at = bisect.bisect_left(snapshot_days, day)
            if today_at == len(snapshot_days) or snapshot_days[today_at] != day:
                continue
            snapshots = snapshots_by_scorecard[scorecard_id]
            today = snapshots[today_at]
            baseline_at = bisect.bisect_left(snapshot_days, day - timedelta(days=baseline_days))
            baseline_length = today_at - baseline_at
            running = running_by_scorecard[scorecard_id]
            before, through = running[baseline_at], running[today_at]
            # A bucket only older days had pools 0 here: PSI's terms for it are 0 either way.
            pooled = {bucket: total - before.get(bucket, 0) for bucket, total in through.items()}
            precision, recall = float(today["precision"]), float(today["recall"])
            predicted, actual = float(today["predicted_conversion_rate"]), float(today["actual_conversion_rate"])
            precision_median, precision_delta = median_delta(
                precision, metric_by_scorecard[scorecard_id, "precision"][baseline_at:today_at]
            )
            recall_median, recall_delta = median_delta(
                recall, metric_by_scorecard[scorecard_id, "recall"][baseline_at:today_at]
            )
            rows.append(
                {
                    "scorecard_id": scorecard_id,
                    "extraction_date": pd.Timestamp(day),
                    "model_version": today["model_version"],
                    "snapshot_extracted_at": today["extracted_at"],
                    "precision": precision,
                    "recall": recall,
                    "predicted_conversion_rate": predicted,
                    "actual_conversion_rate": actual,
                    "calibration_gap": calibration_gap(predicted, actual),
                    "psi": population_stability_index(counts.get((scorecard_id, day), {}), pooled),
                    "precision_baseline_median": precision_median,
                    "recall_baseline_median": recall_median,
                    "precision_delta": precision_delta,
                    "recall_delta": recall_delta,
                    "baseline_days": baseline_length,
                    "load_timestamp": load_ts,
                }
            )
    return pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))


def _naive_utc(moment: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _running_totals(counts: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
    """``totals[i]``: each bucket's contacts summed over ``counts[:i]`` (``len(counts) + 1`` entries)."""
    totals: list[dict[str, float]] = [{}]
    for day_counts in counts:
        running = dict(totals[-1])
        for bucket, count in day_counts.items():
            running[bucket] = running.get(bucket, 0) + count
        totals.append(running)
    return totals


def _bucket_counts(final: pd.DataFrame, distribution: pd.DataFrame) -> dict[tuple[str, date], dict[str, float]]:
    """``{(scorecard_id, day): {bucket: contacts}}`` of exactly the final snapshots."""
    if final.empty or distribution.empty:
        return {}
    keys = final.loc[:, ["scorecard_id", "extraction_date", "extracted_at", "day"]]
    matched = distribution.merge(keys, on=["scorecard_id", "extraction_date", "extracted_at"], how="inner")
    result: dict[tuple[str, date], dict[str, float]] = {}
    columns = (matched[name].tolist() for name in ("scorecard_id", "day", "bucket", "contact_count"))
    for scorecard_id, day, bucket, count in zip(*columns, strict=True):  # plain values: no row objects
        result.setdefault((scorecard_id, day), {})[bucket] = float(count)
    return result
