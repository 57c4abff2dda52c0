"""The drift math against values worked out by hand on a tiny fixture."""

from __future__ import annotations

import math
import random
import statistics
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from pe_assets.drift import (
    EPSILON,
    calibration_gap,
    drift_frame,
    final_snapshots,
    median_delta,
    population_stability_index,
)
from pe_assets.schemas import TABLES, typed_frame, validate

D = date(2024, 3, 10)
LOADED_AT = datetime(2024, 3, 20, tzinfo=UTC)
PERF = TABLES["fact_scorecard_performance"]
DIST = TABLES["fact_scorecard_score_distribution"]
BUCKETS = {"0.0-0.4": (0.0, 0.4), "0.4-0.8": (0.4, 0.8), "0.8-1.0": (0.8, 1.0)}


def _at(day: date, hours: int) -> pd.Timestamp:
    return pd.Timestamp(datetime.combine(day, datetime.min.time())) + pd.Timedelta(hours=hours)


def _snapshot(
    scorecard_id: str,
    day: date,
    *,
    hours_after_day_start: int,
    precision: float,
    recall: float,
    predicted: float = 0.3,
    actual: float = 0.3,
    version: str = "1",
    counts: tuple[int, int, int],
) -> tuple[dict, list[dict]]:
    extracted_at = _at(day, hours_after_day_start)
    perf = {
        "scorecard_id": scorecard_id,
        "extraction_date": pd.Timestamp(day),
        "scorecard_name": scorecard_id.upper(),
        "model_version": version,
        "retraining_timestamp": None,
        "precision": precision,
        "recall": recall,
        "f1_score": 0.5,
        "auc": 0.8,
        "actual_conversion_rate": actual,
        "predicted_conversion_rate": predicted,
        # as transform.scorecard_frames decides it: final only when taken >= 48 h after the day ended
        "pending_backfill": hours_after_day_start < 24 + 48,
        "extracted_at": extracted_at,
    }
    dist = [
        {
            "scorecard_id": scorecard_id,
            "extraction_date": pd.Timestamp(day),
            "extracted_at": extracted_at,
            "model_version": version,
            "bucket": bucket,
            "bucket_lower": lower,
            "bucket_upper": upper,
            "contact_count": count,
        }
        for (bucket, (lower, upper)), count in zip(BUCKETS.items(), counts, strict=True)
    ]
    return perf, dist


def fixture_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """sc1: three final baseline days, day D (final, plus an earlier provisional), one day too old.

    sc2: only a provisional snapshot on D.
    """
    snapshots = [
        _snapshot(
            "sc1", D - timedelta(days=40), hours_after_day_start=80, precision=0.1, recall=0.1, counts=(0, 0, 1000)
        ),
        _snapshot(
            "sc1", D - timedelta(days=3), hours_after_day_start=80, precision=0.8, recall=0.6, counts=(20, 20, 10)
        ),
        _snapshot(
            "sc1", D - timedelta(days=2), hours_after_day_start=80, precision=0.7, recall=0.7, counts=(10, 10, 0)
        ),
        _snapshot(
            "sc1", D - timedelta(days=1), hours_after_day_start=80, precision=0.9, recall=0.5, counts=(10, 10, 10)
        ),
        # D: a provisional snapshot (ignored), then the final one.
        _snapshot("sc1", D, hours_after_day_start=3, precision=0.2, recall=0.2, counts=(1, 1, 98)),
        _snapshot(
            "sc1",
            D,
            hours_after_day_start=78,
            precision=0.65,
            recall=0.45,
            predicted=0.30,
            actual=0.22,
            version="2",
            counts=(50, 30, 20),
        ),
        _snapshot("sc2", D, hours_after_day_start=3, precision=0.5, recall=0.5, counts=(5, 5, 5)),
    ]
    performance = typed_frame(PERF, [perf for perf, _ in snapshots])
    distribution = typed_frame(DIST, [row for _, rows in snapshots for row in rows])
    return performance, distribution


def test_psi_hand_computed() -> None:
    # p = (.5, .3, .2), q = (.4, .4, .2):
    # PSI = (.5-.4) ln(.5/.4) + (.3-.4) ln(.3/.4) + 0 = .1 * 0.2231435513 + .1 * 0.2876820725
    assert population_stability_index({"a": 50, "b": 30, "c": 20}, {"a": 40, "b": 40, "c": 20}) == pytest.approx(
        0.0510825624, abs=1e-9
    )
    # Identical distributions (any scale): 0.
    assert population_stability_index({"a": 1, "b": 3}, {"a": 10, "b": 30}) == pytest.approx(0.0, abs=1e-12)


def test_psi_floors_empty_buckets_at_epsilon() -> None:
    # p = (1, 0 -> 1e-4), q = (.5, .5): .5 ln 2 + (1e-4 - .5) ln(1e-4 / .5) = 0.3465735903 + 4.2577448764
    assert EPSILON == 1e-4
    assert population_stability_index({"a": 100, "b": 0}, {"a": 50, "b": 50}) == pytest.approx(4.6043184667, abs=1e-9)
    # A bucket only one side has counts as 0 on the other.
    assert population_stability_index({"a": 100}, {"a": 50, "b": 50}) == pytest.approx(4.6043184667, abs=1e-9)
    # Nothing to compare with.
    assert population_stability_index({"a": 10}, {}) is None
    assert population_stability_index({}, {"a": 10}) is None


def test_calibration_gap_and_median_delta() -> None:
    assert calibration_gap(0.30, 0.22) == pytest.approx(0.08)
    assert calibration_gap(0.22, 0.30) == pytest.approx(0.08)
    assert median_delta(0.65, [0.8, 0.7, 0.9]) == pytest.approx((0.8, -0.15))
    assert median_delta(0.5, [0.2, 0.4, 0.6, 0.8]) == pytest.approx((0.5, 0.0))  # even: mean of the middle two
    assert median_delta(0.5, []) == (None, None)


def test_final_snapshots_keep_the_latest_non_pending_per_scorecard_day() -> None:
    performance, _ = fixture_frames()
    final = final_snapshots(performance)
    assert len(final) == 5  # sc1 on four baseline days + D; sc2 has none
    on_d = final[final["extraction_date"] == pd.Timestamp(D)]
    assert list(on_d["scorecard_id"]) == ["sc1"] and list(on_d["precision"]) == [0.65]


def test_drift_frame_matches_hand_computed_values() -> None:
    performance, distribution = fixture_frames()
    frame = drift_frame(performance, distribution, [D - timedelta(days=2), D], loaded_at=LOADED_AT)
    spec = TABLES["scorecard_drift"]
    assert validate(spec, typed_frame(spec, frame)).passed
    assert list(frame["scorecard_id"]) == ["sc1", "sc1"]  # sc2 has no final snapshot on D: no row

    day_d = frame[frame["extraction_date"] == pd.Timestamp(D)].iloc[0]
    assert day_d["model_version"] == "2"
    assert day_d["snapshot_extracted_at"] == _at(D, 78)
    assert day_d["baseline_days"] == 3  # D-3, D-2, D-1; D-40 is outside the 28 days
    # Baseline pooled (20+10+10, 20+10+10, 10+0+10) = (40, 40, 20) -> q = (.4, .4, .2); D: p = (.5, .3, .2)
    assert day_d["psi"] == pytest.approx(0.0510825624, abs=1e-9)
    assert day_d["calibration_gap"] == pytest.approx(0.08)
    # median(.8, .7, .9) = .8 and median(.6, .7, .5) = .6
    assert day_d["precision_baseline_median"] == pytest.approx(0.8)
    assert day_d["precision_delta"] == pytest.approx(-0.15)
    assert day_d["recall_baseline_median"] == pytest.approx(0.6)
    assert day_d["recall_delta"] == pytest.approx(-0.15)
    assert day_d["load_timestamp"] == pd.Timestamp("2024-03-20")

    # D-2 against D-3 alone: p = (.5, .5, 0 -> 1e-4), q = (.4, .4, .2)
    # PSI = 2 * .1 ln 1.25 + (1e-4 - .2) ln(1e-4 / .2) = 0.0446287103 + 1.5194204017
    day_d2 = frame[frame["extraction_date"] == pd.Timestamp(D - timedelta(days=2))].iloc[0]
    assert day_d2["baseline_days"] == 1
    assert day_d2["psi"] == pytest.approx(1.5640491119, abs=1e-9)
    assert day_d2["precision_delta"] == pytest.approx(-0.1)


def test_drift_frame_without_baseline_leaves_psi_and_deltas_null() -> None:
    performance, distribution = fixture_frames()
    first = D - timedelta(days=40)
    frame = drift_frame(performance, distribution, [first], loaded_at=LOADED_AT)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["baseline_days"] == 0
    assert pd.isna(row["psi"]) and pd.isna(row["precision_delta"]) and pd.isna(row["recall_delta"])
    spec = TABLES["scorecard_drift"]
    assert validate(spec, typed_frame(spec, frame)).passed


def test_drift_frame_of_nothing_is_an_empty_frame_with_the_columns() -> None:
    performance, distribution = fixture_frames()
    frame = drift_frame(performance.iloc[0:0], distribution.iloc[0:0], [D], loaded_at=LOADED_AT)
    assert frame.empty and list(frame.columns) == TABLES["scorecard_drift"].column_names


def test_drift_frame_equals_the_definition_row_by_row_on_a_random_history() -> None:
    """Whole-column drift against the module docstring's definitions, computed one scorecard-day at
    a time: several scorecards, gaps, provisional snapshots, buckets that come and go."""
    rng = random.Random(7)
    first = D - timedelta(days=60)
    snapshots = []
    for scorecard, first_offset in (("sc-a", 0), ("sc-b", 0), ("sc-c", 0), ("sc-d", 45)):  # sc-d starts late
        for offset in range(first_offset, 61):
            day = first + timedelta(days=offset)
            if rng.random() < 0.25:
                continue  # no snapshot that day
            for hours in sorted(rng.sample([3, 30, 75, 80], rng.randint(1, 3))):
                counts = tuple(rng.choice([0, rng.randint(0, 500)]) for _ in BUCKETS)
                snapshots.append(
                    _snapshot(
                        scorecard,
                        day,
                        hours_after_day_start=hours,
                        precision=round(rng.random(), 3),
                        recall=round(rng.random(), 3),
                        predicted=round(rng.random(), 3),
                        actual=round(rng.random(), 3),
                        counts=counts,
                    )
                )
    performance = typed_frame(PERF, [perf for perf, _ in snapshots])
    distribution = typed_frame(DIST, [row for _, rows in snapshots for row in rows])
    days = [first + timedelta(days=offset) for offset in range(20, 61)]
    frame = drift_frame(performance, distribution, days, loaded_at=LOADED_AT)

    final = final_snapshots(performance)
    final_by = {(row.scorecard_id, row.extraction_date.date()): row for row in final.itertuples()}
    counts_of = {
        key: {
            row.bucket: row.contact_count
            for row in distribution.itertuples()
            if (row.scorecard_id, row.extraction_date.date(), row.extracted_at)
            == (key[0], key[1], snapshot.extracted_at)
        }
        for key, snapshot in final_by.items()
    }
    expected = []
    for day in days:
        for scorecard in sorted({scorecard for scorecard, _ in final_by}):
            if (scorecard, day) not in final_by:
                continue
            today = final_by[scorecard, day]
            baseline = [
                key for key in sorted(final_by) if key[0] == scorecard and day - timedelta(days=28) <= key[1] < day
            ]
            pooled: dict[str, float] = {}
            for key in baseline:
                for bucket, count in counts_of[key].items():
                    pooled[bucket] = pooled.get(bucket, 0) + count
            current = counts_of[scorecard, day]
            psi = None
            if sum(current.values()) > 0 and sum(pooled.values()) > 0:
                buckets = sorted(set(current) | set(pooled))
                p = {b: max(current.get(b, 0) / sum(current.values()), EPSILON) for b in buckets}
                q = {b: max(pooled.get(b, 0) / sum(pooled.values()), EPSILON) for b in buckets}
                psi = sum((p[b] - q[b]) * math.log(p[b] / q[b]) for b in buckets)
            precisions = [final_by[key].precision for key in baseline]
            recalls = [final_by[key].recall for key in baseline]
            expected.append(
                (
                    scorecard,
                    day,
                    len(baseline),
                    psi,
                    statistics.median(precisions) if baseline else None,
                    today.precision - statistics.median(precisions) if baseline else None,
                    statistics.median(recalls) if baseline else None,
                    abs(today.predicted_conversion_rate - today.actual_conversion_rate),
                )
            )
    assert len(expected) > 60
    assert any(row[2] == 0 for row in expected) and any(row[3] is None for row in expected)  # no baseline, no PSI
    actual = [
        (
            row.scorecard_id,
            row.extraction_date.date(),
            row.baseline_days,
            None if pd.isna(row.psi) else row.psi,
            None if pd.isna(row.precision_baseline_median) else row.precision_baseline_median,
            None if pd.isna(row.precision_delta) else row.precision_delta,
            None if pd.isna(row.recall_baseline_median) else row.recall_baseline_median,
            row.calibration_gap,
        )
        for row in frame.itertuples()
    ]
    assert actual == expected  # exact: the same floating-point operations in the same order
