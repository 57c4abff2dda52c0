"""Pure transforms: payloads -> frames, without Dagster or the network."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from pe_assets.schemas import TABLES, validate
from pe_assets.transform.predictive_engagement import (
    campaign_dim_frame,
    journey_frames,
    predictive_journey_frame,
    scorecard_frames,
)

LOADED = datetime(2024, 3, 8, tzinfo=UTC)


def step(step_id, count, rate=0.5, **extra):
    body = {"stepId": step_id, "stepName": f"name {step_id}", "contactCount": count, "conversionRate": rate}
    body.update(extra)
    return body


def envelope(pages, campaign_id="c1", day="2024-03-05", scorecard_id="s1", extracted_at="2024-03-06T01:00:00+00:00"):
    return {
        "source_id": campaign_id,
        "day": day,
        "extracted_at": extracted_at,
        "campaign": {"id": campaign_id, "status": "active", "scorecardId": scorecard_id},
        "pages": [{"steps": steps} for steps in pages],
    }


def test_step_sequence_counts_across_pages_in_served_order():
    result = journey_frames([envelope([[step("a", 10), step("b", 8)], [step("c", 5)]])], LOADED)
    assert list(zip(result.steps["step_id"], result.steps["step_sequence"], strict=True)) == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
    ]
    assert validate(TABLES["fact_journey_step"], result.steps).passed


def test_a_text_column_holding_a_non_text_value_fails_its_check_naming_the_row():
    # Text columns are checked by pandas' type inference first; a column that is not all text must
    # still fail Pandera's str rule, value by value, as the stock check reports it.
    steps = journey_frames([envelope([[step("a", 10), step("b", 8), step("c", 5)]])], LOADED).steps
    steps["step_name"] = steps["step_name"].astype(object)
    steps.loc[1, "step_name"] = 42
    steps.loc[2, "step_name"] = None  # NULL is allowed: only row 1 fails
    report = validate(TABLES["fact_journey_step"], steps)
    assert not report.passed
    cases = report.failure_cases
    assert list(cases["index"]) == [1] and list(cases["column"]) == ["step_name"]
    assert list(cases["failure_case"]) == [42] and "str" in cases["check"].iloc[0]


def test_timestamp_columns_are_coerced_as_pandera_does_unless_already_typed():
    # A datetime64[ns] column is taken as it is (no pd.to_datetime pass); text is still coerced,
    # and text that is no instant still fails, naming its column.
    steps = journey_frames([envelope([[step("a", 10), step("b", 8)]])], LOADED).steps
    assert validate(TABLES["fact_journey_step"], steps).passed
    as_text = steps.assign(extracted_at=steps["extracted_at"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
    assert as_text["extracted_at"].dtype == object
    assert validate(TABLES["fact_journey_step"], as_text).passed
    report = validate(TABLES["fact_journey_step"], as_text.assign(extracted_at=["2024-03-06T01:00:00", "soon"]))
    assert not report.passed and set(report.failure_cases["column"]) == {"extracted_at"}


def test_damaged_steps_are_rejected_with_reason_and_keep_positions():
    pages = [
        [
            step("a", 10),
            {"stepName": "no id", "contactCount": 3, "conversionRate": 0.1},
            {"stepId": "x", "conversionRate": 0.1},
            step("d", 2),
        ]
    ]
    result = journey_frames([envelope(pages)], LOADED)
    assert list(result.steps["step_sequence"]) == [1, 4]
    assert list(zip(result.rejected["step_sequence"], result.rejected["reason"], strict=True)) == [
        (2, "missing stepId"),
        (3, "missing contactCount"),
    ]
    assert '"stepName": "no id"' in result.rejected["raw_step"].iloc[0]
    assert validate(TABLES["rejected_journey_step"], result.rejected).passed


@pytest.mark.parametrize(
    ("bad_step", "reason"),
    [
        ({"stepId": "b", "contactCount": -1, "conversionRate": 0.1}, "contactCount is negative"),
        ({"stepId": "b", "contactCount": "7", "conversionRate": 0.1}, "contactCount is not a number"),
        ({"stepId": "b", "contactCount": 2.5, "conversionRate": 0.1}, "contactCount is not a whole number"),
        ({"stepId": "b", "contactCount": True, "conversionRate": 0.1}, "contactCount is not a number"),
        ({"stepId": "b", "contactCount": 1, "conversionRate": 1.2}, "conversionRate 1.2 is outside [0, 1]"),
        ({"stepId": "b", "contactCount": 1, "conversionRate": float("nan")}, "conversionRate is not a finite number"),
        ({"stepId": "b", "contactCount": 1}, "missing conversionRate"),
        (
            {"stepId": "b", "contactCount": 1, "conversionRate": 0.1, "averageScore": -0.1},
            "averageScore -0.1 is outside",
        ),
        ({"stepId": 5, "contactCount": 1, "conversionRate": 0.1}, "stepId is not a string"),
        ({"stepId": "b", "contactCount": 1, "conversionRate": 0.1, "stepName": 3}, "stepName is not a string"),
        ({"stepId": "a", "contactCount": 1, "conversionRate": 0.1}, "duplicate stepId 'a'"),
        ("not an object", "step is not a JSON object"),
    ],
)
def test_untypable_values_are_quarantined(bad_step, reason):
    result = journey_frames([envelope([[step("a", 10), bad_step]])], LOADED)
    assert list(result.steps["step_id"]) == ["a"]
    assert result.rejected["reason"].iloc[0].startswith(reason)


def test_nulls_stay_null_and_empty_exit_reason_becomes_null():
    steps = [
        step("a", 10, exitReason=None, averageScore=None, stepName=None),
        step("b", 5, exitReason=""),
        step("c", 1, exitReason="no_answer", averageScore=0.25),
    ]
    frame = journey_frames([envelope([steps])], LOADED).steps
    assert frame["exit_reason"].tolist() == [None, None, "no_answer"]
    assert frame["step_name"].iloc[0] is None
    assert pd.isna(frame["average_score"].iloc[0]) and frame["average_score"].iloc[2] == 0.25


def test_unknown_fields_are_tolerated_and_counted():
    result = journey_frames(
        [envelope([[step("a", 1, experimentalBucket="b"), step("b", 1, experimentalBucket="c")]])], LOADED
    )
    assert len(result.steps) == 2
    assert result.unknown_fields == {"experimentalBucket": 2}


def test_full_precision_is_kept():
    rate = 0.123456789012345
    frame = journey_frames([envelope([[step("a", 1, rate=rate)]])], LOADED).steps
    assert frame["conversion_rate"].iloc[0] == rate


def scorecard_envelope(extracted_at, version="3", actual=0.28, day="2024-03-05"):
    return {
        "source_id": "s1",
        "day": day,
        "extracted_at": extracted_at,
        "response": {
            "scorecardId": "s1",
            "scorecardName": "Model",
            "modelVersion": version,
            "lastRetrainedDate": "2024-02-01T00:00:00Z",
            "performanceMetrics": {
                "precision": 0.84,
                "recall": 0.76,
                "f1Score": 0.8,
                "auc": 0.91,
                "actualConversionRate": actual,
                "predictedConversionRate": 0.31,
            },
            "scoreDistribution": {"0.0-0.2": 1, "0.2-0.4": 2, "0.4-0.6": 3, "0.6-0.8": 4, "0.8-1.0": 5},
        },
    }


def test_scorecard_snapshots_are_history_with_pending_backfill():
    early = scorecard_envelope("2024-03-06T03:00:00Z", actual=0.2)  # 3 h after the day ended
    edge = scorecard_envelope("2024-03-07T23:59:59Z", actual=0.25)  # just inside 48 h
    final = scorecard_envelope("2024-03-08T00:00:00Z", actual=0.28)  # 48 h after: final
    performance, distribution = scorecard_frames([early, edge, final])
    assert performance["pending_backfill"].tolist() == [True, True, False]
    assert performance["actual_conversion_rate"].tolist() == [0.2, 0.25, 0.28]
    assert performance["model_version"].tolist() == ["3", "3", "3"]
    assert len(distribution) == 15
    assert distribution.iloc[0][["bucket", "bucket_lower", "bucket_upper"]].tolist() == ["0.0-0.2", 0.0, 0.2]
    assert validate(TABLES["fact_scorecard_performance"], performance).passed
    assert validate(TABLES["fact_scorecard_score_distribution"], distribution).passed


def test_predictive_journey_takes_the_latest_snapshot():
    steps = journey_frames(
        [envelope([[step("a", 10), step("b", 5)]]), envelope([[step("z", 1)]], campaign_id="c2", scorecard_id=None)],
        LOADED,
    ).steps
    performance, _ = scorecard_frames(
        [scorecard_envelope("2024-03-06T03:00:00Z", "3", 0.2), scorecard_envelope("2024-03-09T00:00:00Z", "4", 0.28)]
    )
    joined = predictive_journey_frame(steps, performance, LOADED)
    assert len(joined) == 3
    scored = joined[joined["campaign_id"] == "c1"]
    assert scored["model_version"].tolist() == ["4", "4"]
    assert scored["actual_conversion_rate"].tolist() == [0.28, 0.28]
    assert scored["pending_backfill"].tolist() == [False, False]
    unscored = joined[joined["campaign_id"] == "c2"].iloc[0]
    assert unscored["model_version"] is None or pd.isna(unscored["model_version"])
    assert pd.isna(unscored["pending_backfill"])
    assert validate(TABLES["fact_predictive_journey"], joined).passed


def test_dim_keeps_every_campaign_in_its_latest_state():
    def listing(at, entities):
        return {"extracted_at": at, "pages": [{"entities": entities}]}

    def campaign(cid, status):
        return {
            "id": cid,
            "name": cid.upper(),
            "status": status,
            "scorecardId": None,
            "createdDate": "2023-01-01T00:00:00Z",
            "modifiedDate": "2023-02-01T00:00:00Z",
        }

    frame = campaign_dim_frame(
        [
            listing("2024-03-07T00:00:00Z", [campaign("c1", "archived")]),  # newest, given first
            listing("2024-03-06T00:00:00Z", [campaign("c1", "active"), campaign("c2", "paused")]),
        ]
    )
    assert frame[["campaign_id", "status"]].values.tolist() == [["c1", "archived"], ["c2", "paused"]]
    assert validate(TABLES["dim_predictive_campaign"], frame).passed
