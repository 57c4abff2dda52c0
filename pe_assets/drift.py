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

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime

import numpy as np
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


def population_stability_index(
    current: Mapping[str, float], baseline: Mapping[str, float], epsilon: float = EPSILON
) -> float | None:
    """``sum_i (p_i - q_i) * ln(p_i / q_i)`` over the union of buckets; None if either side is empty.

    ``current`` and ``baseline`` are contact counts per bucket (not proportions).
    """
    buckets = sorted(set(current) | set(baseline))
    psi = _psi(
        np.array([[current.get(b, 0) for b in buckets]], dtype=float),
        np.array([[baseline.get(b, 0) for b in buckets]], dtype=float),
        epsilon,
    )[0]
    return None if math.isnan(psi) else float(psi)


def median_delta(value: float, history: Sequence[float]) -> tuple[float | None, float | None]:
    """``(median(history), value - median(history))``; ``(None, None)`` for an empty history."""
    if not history:
        return None, None
    median = float(_medians(np.array([list(history)], dtype=float))[0])
    return median, value - median


def _psi(current: np.ndarray, baseline: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    """PSI per row of two (rows x buckets) count matrices, buckets in sorted order; NaN where
    either row counts no contacts. Each bucket's share is floored at ``epsilon`` (no renormalising);
    a bucket empty on both sides adds exactly 0. Terms are added bucket by bucket, in order."""
    current_total = current.sum(axis=1)  # whole numbers: any summation order is exact
    baseline_total = baseline.sum(axis=1)
    defined = (current_total > 0) & (baseline_total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.maximum(current / current_total[:, None], epsilon)
        q = np.maximum(baseline / baseline_total[:, None], epsilon)
    ratio = np.where(defined[:, None], p / q, 1.0)
    # math.log, not np.log: numpy's SIMD log may round the last bit differently by CPU.
    logs = np.fromiter(map(math.log, ratio.ravel().tolist()), dtype=float, count=ratio.size).reshape(ratio.shape)
    terms = (p - q) * logs
    psi = np.zeros(len(current))
    for column in range(terms.shape[1]):
        psi += terms[:, column]
    return np.where(defined, psi, np.nan)


def _medians(windows: np.ndarray) -> np.ndarray:
    """The median of each row's non-NaN values (NaN for a row of none): the middle value, or the
    mean of the middle two, as ``statistics.median``."""
    if windows.shape[1] == 0:
        return np.full(len(windows), np.nan)
    ordered = np.sort(windows, axis=1)  # NaN sorts last
    lengths = (~np.isnan(windows)).sum(axis=1)
    rows = np.arange(len(windows))
    middle_low = ordered[rows, np.maximum(lengths - 1, 0) // 2]
    middle_high = ordered[rows, lengths // 2]  # < lengths <= width, or 0 for an empty row
    # odd lengths: the same value twice, and (x + x) / 2 == x exactly
    return np.where(lengths > 0, (middle_low + middle_high) / 2, np.nan)


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
    """One drift row per scorecard and day of ``days`` that has a final snapshot, ordered by day and
    scorecard.

    ``performance`` and ``distribution`` are fact_scorecard_performance and
    fact_scorecard_score_distribution rows covering ``days`` and the ``baseline_days`` before the
    first of them (more is fine). Columns are ``DRIFT_COLUMNS``, in that order.
    """
    # Whole columns, not a row at a time (a year is ~50,000 scorecard-days): ``final`` is sorted by
    # scorecard and day, so a day's baseline is the run of rows just before it, found by one search.
    final = final_snapshots(performance)
    day_numbers = pd.to_datetime(final["extraction_date"]).to_numpy(dtype="datetime64[D]").astype(np.int64)
    scorecard_ids = final["scorecard_id"].astype(str).to_numpy(dtype=object)
    scorecard_codes = pd.factorize(scorecard_ids, sort=True)[0].astype(np.int64)
    keys = (scorecard_codes << 32) + day_numbers  # ascending, like the rows
    wanted = np.array(sorted(set(days)), dtype="datetime64[D]").astype(np.int64)
    selected = np.flatnonzero(np.isin(day_numbers, wanted))
    selected = selected[np.lexsort((scorecard_codes[selected], day_numbers[selected]))]
    baseline_at = np.searchsorted(keys, keys[selected] - baseline_days, side="left")
    baseline_lengths = selected - baseline_at

    def baseline_medians(metric: np.ndarray) -> np.ndarray:
        # Row r's window: rows baseline_at[r] .. selected[r] - 1 (at most ``baseline_days``), NaN-padded.
        positions = baseline_at[:, None] + np.arange(baseline_days)[None, :]
        inside = positions < selected[:, None]
        return _medians(np.where(inside, metric[np.minimum(positions, max(len(metric) - 1, 0))], np.nan))

    # Contacts per bucket of every final snapshot; a baseline's pooled counts are one difference of
    # running totals (whole numbers: exact).
    counts = _bucket_counts(final, distribution)
    running = np.vstack([np.zeros((1, counts.shape[1])), np.cumsum(counts, axis=0)])
    precision, recall, predicted, actual = (
        final[column].to_numpy(dtype=float)
        for column in ("precision", "recall", "predicted_conversion_rate", "actual_conversion_rate")
    )
    precision_medians, recall_medians = baseline_medians(precision), baseline_medians(recall)
    today_precision, today_recall = precision[selected], recall[selected]
    load_ts = _naive_utc(loaded_at)
    columns = {
        "scorecard_id": scorecard_ids[selected],
        "extraction_date": day_numbers[selected].astype("datetime64[D]").astype("datetime64[ns]"),
        "model_version": final["model_version"].to_numpy(dtype=object)[selected],
        "snapshot_extracted_at": final["extracted_at"].to_numpy(dtype="datetime64[ns]")[selected],
        "precision": today_precision,
        "recall": today_recall,
        "predicted_conversion_rate": predicted[selected],
        "actual_conversion_rate": actual[selected],
        "calibration_gap": calibration_gap(predicted[selected], actual[selected]),
        "psi": _psi(counts[selected], running[selected] - running[baseline_at]),
        "precision_baseline_median": precision_medians,
        "recall_baseline_median": recall_medians,
        "precision_delta": today_precision - precision_medians,
        "recall_delta": today_recall - recall_medians,
        "baseline_days": baseline_lengths.astype(np.int64),
        "load_timestamp": np.full(len(selected), load_ts.to_datetime64(), dtype="datetime64[ns]"),
    }
    return pd.DataFrame(columns, columns=list(DRIFT_COLUMNS))


def _naive_utc(moment: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _bucket_counts(final: pd.DataFrame, distribution: pd.DataFrame) -> np.ndarray:
    """(final snapshots x buckets, buckets in sorted order): each final snapshot's contacts per bucket."""
    keys = ["scorecard_id", "extraction_date", "extracted_at"]
    rows = final.loc[:, keys].assign(final_row=np.arange(len(final)))
    matched = distribution.loc[:, [*keys, "bucket", "contact_count"]].merge(rows, on=keys, how="inner")
    bucket_codes, buckets = pd.factorize(matched["bucket"].astype(str), sort=True)
    counts = np.zeros((len(final), len(buckets)))
    counts[matched["final_row"].to_numpy(dtype=np.int64), bucket_codes] = matched["contact_count"].to_numpy(dtype=float)
    return counts
