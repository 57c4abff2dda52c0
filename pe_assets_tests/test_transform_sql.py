"""The SQL journey transform (``journey_frames_from_json``) against the row-by-row Python rules
(``journey_frames_reference``): same rows, same order, same dtypes, same unknown-field counts."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pe_assets.schemas import TABLES, validate
from pe_assets.transform.predictive_engagement import (
    JourneyTransformResult,
    journey_frames,
    journey_frames_from_json,
    journey_frames_reference,
)

LOADED = datetime(2024, 3, 8, tzinfo=UTC)


def text(envelope: dict[str, Any]) -> str:
    """As the landing zone writes it, except that NaN/Infinity are allowed (the rules see them)."""
    return json.dumps(envelope, ensure_ascii=False, allow_nan=True, separators=(",", ":"))


def envelope(pages: list[Any], campaign_id: str = "c1", day: str = "2024-03-05", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source_id": campaign_id,
        "day": day,
        "extracted_at": "2024-03-06T01:00:00+00:00",
        "campaign": {"id": campaign_id, "status": "active", "scorecardId": "s1"},
        "pages": [{"steps": steps} for steps in pages],
    }
    body.update(extra)
    return body


def step(step_id: Any, count: Any = 1, rate: Any = 0.5, **extra: Any) -> dict[str, Any]:
    return {"stepId": step_id, "stepName": f"name {step_id}", "contactCount": count, "conversionRate": rate, **extra}


def assert_same(left: JourneyTransformResult, right: JourneyTransformResult) -> None:
    pd.testing.assert_frame_equal(left.steps, right.steps)
    pd.testing.assert_frame_equal(left.rejected, right.rejected)
    assert left.unknown_fields == right.unknown_fields
    # assert_frame_equal takes None for NaN and -0.0 for 0.0: hold the stricter sameness too
    for column in ("step_name", "exit_reason", "scorecard_id"):
        assert [v is None for v in left.steps[column]] == [v is None for v in right.steps[column]], column
    for column in ("conversion_rate", "average_score"):
        assert np.array_equal(np.signbit(left.steps[column]), np.signbit(right.steps[column])), column


def both(texts: list[str | bytes]) -> JourneyTransformResult:
    """The SQL result, after checking it equals the reference's on the parsed texts."""
    sql = journey_frames_from_json(texts, LOADED)
    assert_same(sql, journey_frames_reference([json.loads(t) for t in texts], LOADED))
    return sql


def only(steps: list[Any]) -> JourneyTransformResult:
    return both([text(envelope([steps]))])


# ---------------------------------------------------------------------------------------------
# Equivalence over many generated envelopes


def bad_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            False,
            "7",
            "0.5",
            "",
            [],
            [1],
            {},
            {"a": 1},
            -1,
            -0.0,
            0,
            5.0,
            5.5,
            -2.5,
            1.5,
            2**63 - 1,
            2**63,
            2**64,
            10**30,
            -(10**30),
            1e20,
            1e300,
            float("nan"),
            float("inf"),
            float("-inf"),
            1,
            0.0,
            1.0,
        ]
    )


def random_step(rng: random.Random, index: int) -> Any:
    roll = rng.random()
    if roll < 0.04:
        return rng.choice(["a string", ["a", "list"], None, 42, True, {}])
    step_id: Any = f"step-{index}"
    if roll < 0.10:  # an id seen before (earlier steps may be accepted or rejected)
        step_id = f"step-{rng.randrange(max(index, 1))}"
    body: dict[str, Any] = {
        "stepId": step_id,
        "stepName": rng.choice([f"Étape {index} ✓", f"step {index}", None, "", "quote ' and \" \\"]),
        "contactCount": rng.randrange(0, 10_000),
        "conversionRate": rng.random(),
    }
    if rng.random() < 0.6:
        body["averageScore"] = rng.choice([rng.random(), None, 0, 1, -0.0])
    if rng.random() < 0.6:
        body["exitReason"] = rng.choice(["abandoned", "", None, "ünïcödé"])
    if rng.random() < 0.05:
        body[rng.choice(["experimentalBucket", "variant", "ünknown"])] = rng.choice([1, "x", None])
    if roll < 0.35:  # damage one field (or drop it)
        name = rng.choice(["stepId", "stepName", "contactCount", "conversionRate", "averageScore", "exitReason"])
        if rng.random() < 0.2:
            body.pop(name, None)
        else:
            body[name] = bad_value(rng)
    keys = list(body)
    rng.shuffle(keys)  # key order must not matter
    return {key: body[key] for key in keys}


def random_envelopes(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    envelopes = []
    for i in range(count):
        steps = [random_step(rng, s) for s in range(rng.randrange(0, 40))]
        cut = sorted(rng.randrange(len(steps) + 1) for _ in range(rng.randrange(0, 3)))
        pages: list[dict[str, Any]] = [{"steps": part} for part in np.split(np.array(steps, dtype=object), cut)]
        pages = [{"steps": list(page["steps"])} for page in pages]
        if rng.random() < 0.05:
            pages.insert(rng.randrange(len(pages) + 1), rng.choice([{}, {"steps": None}, {"steps": []}]))
        body = {
            "envelope_version": 1,
            "source_id": f"c{rng.randrange(12)}",
            "day": f"2024-03-{rng.randrange(1, 29):02d}",
            "extracted_at": rng.choice(
                ["2024-03-06T01:00:00+00:00", "2024-03-06T01:00:00.123456Z", "2024-03-06T03:30:00+02:30"]
            ),
            "campaign": rng.choice(
                [
                    {"id": "x", "scorecardId": f"s{i % 5}"},
                    {"id": "x", "scorecardId": None},
                    {"id": "x"},
                    None,
                ]
            ),
            "pages": pages,
        }
        if body["campaign"] is None and rng.random() < 0.5:
            del body["campaign"]
        envelopes.append(body)
    return envelopes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sql_path_equals_the_python_rules_on_generated_envelopes(seed):
    envelopes = random_envelopes(seed, 400)
    texts = [text(e) for e in envelopes]
    sql = journey_frames_from_json(texts, LOADED)
    reference = journey_frames_reference(envelopes, LOADED)
    assert len(sql.steps) + len(sql.rejected) > 5_000
    assert len(sql.rejected) > 1_000 and len(set(sql.rejected["reason"].str[:20])) >= 15
    assert sql.unknown_fields
    assert_same(sql, reference)
    assert_same(journey_frames(envelopes, LOADED), reference)  # the dict wrapper too


# ---------------------------------------------------------------------------------------------
# Edge cases, one by one (each also checked against the reference by ``both``/``only``)


def test_whole_floats_are_counts_and_fractions_are_not():
    result = only([step("a", 5.0), step("b", 5.5), step("c", 1e20), step("d", 2.0**63 - 1024)])
    assert result.steps[["step_id", "contact_count"]].values.tolist() == [["a", 5], ["d", 2**63 - 1024]]
    assert result.rejected["reason"].tolist() == ["contactCount is not a whole number", "contactCount is too large"]


@pytest.mark.parametrize(
    ("count", "reason"),
    [
        (2**63 - 1, None),
        (2**63, "contactCount is too large"),
        (2**64, "contactCount is too large"),
        (10**30, "contactCount is too large"),
        (10**400, "contactCount is too large"),
        (-(10**30), "contactCount is negative"),
        (-(10**400), "contactCount is negative"),
        (float("inf"), "contactCount is not a whole number"),
        (float("nan"), "contactCount is not a whole number"),
    ],
)
def test_very_large_counts(count, reason):
    result = only([step("a", count)])
    if reason is None:
        assert result.steps["contact_count"].tolist() == [count]
    else:
        assert result.rejected["reason"].tolist() == [reason]


def test_very_large_rates_are_outside_and_quoted_exactly():
    result = only([step("a", 1, rate=10**30), step("b", 1, rate=10**400), step("c", 1, rate=1e400)])
    assert result.rejected["reason"].tolist() == [
        f"conversionRate {10**30} is outside [0, 1]",
        f"conversionRate {10**400} is outside [0, 1]",
        "conversionRate is not a finite number",
    ]


def test_negative_zero():
    raw = '{"source_id":"c1","day":"2024-03-05","extracted_at":"2024-03-06T00:00:00Z","pages":[{"steps":[' + (
        '{"stepId":"a","contactCount":-0,"conversionRate":-0.0,"averageScore":-0.0},'
        '{"stepId":"b","contactCount":-0.0,"conversionRate":-0,"averageScore":0}]}]}'
    )
    result = both([raw])
    assert result.steps["contact_count"].tolist() == [0, 0]
    assert np.signbit(result.steps["conversion_rate"]).tolist() == [True, False]
    assert np.signbit(result.steps["average_score"]).tolist() == [True, False]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("contactCount", True, "contactCount is not a number"),
        ("contactCount", False, "contactCount is not a number"),
        ("conversionRate", True, "conversionRate is not a finite number"),
        ("averageScore", False, "averageScore is not a finite number"),
        ("contactCount", "7", "contactCount is not a number"),
        ("conversionRate", "0.5", "conversionRate is not a finite number"),
        ("averageScore", "0.5", "averageScore is not a finite number"),
        ("contactCount", [1], "contactCount is not a number"),
        ("conversionRate", {"v": 1}, "conversionRate is not a finite number"),
        ("stepName", 3, "stepName is not a string"),
        ("exitReason", False, "exitReason is not a string"),
        ("stepId", 5, "stepId is not a string"),
        ("stepId", True, "stepId is not a string"),
        ("stepId", "", "missing stepId"),
        ("averageScore", 1.5, "averageScore 1.5 is outside [0, 1]"),
        ("conversionRate", -1, "conversionRate -1 is outside [0, 1]"),
        ("conversionRate", 2, "conversionRate 2 is outside [0, 1]"),
    ],
)
def test_wrong_types(field, value, reason):
    result = only([{**step("a", 3), field: value}])
    assert result.rejected["reason"].tolist() == [reason]
    assert result.steps.empty


def test_null_and_absent_fields():
    steps = [
        {"stepId": "a", "contactCount": 1, "conversionRate": 0.5},
        {"stepId": "b", "contactCount": 1, "conversionRate": 0.5, "stepName": None, "averageScore": None},
        {"stepId": "c", "contactCount": 1, "conversionRate": 0.5, "exitReason": None},
        {"stepId": "d", "contactCount": 1, "conversionRate": 0.5, "exitReason": ""},
        {"stepId": "e", "contactCount": 1, "conversionRate": 0.5, "stepName": ""},
        {"stepId": "f", "contactCount": 1, "conversionRate": None},
        {"stepId": "g", "contactCount": None, "conversionRate": 0.5},
        {"stepId": None, "contactCount": 1, "conversionRate": 0.5},
    ]
    result = only(steps)
    assert result.steps["step_id"].tolist() == ["a", "b", "c", "d", "e"]
    assert result.steps["exit_reason"].tolist() == [None] * 5
    assert result.steps["step_name"].tolist() == [None, None, None, None, ""]
    assert result.steps["average_score"].isna().all()
    assert result.rejected["reason"].tolist() == ["missing conversionRate", "missing contactCount", "missing stepId"]


def test_empty_pages_and_pages_without_steps():
    pages_variants = [
        [],
        [{}],
        [{"steps": None}, {"steps": []}, {"other": 1}],
        [{"steps": [step("a")]}, {}, {"steps": [step("b")]}, {"steps": None}, {"steps": [step("c")]}],
    ]
    texts = [
        text({**envelope([]), "pages": pages, "day": f"2024-03-0{i + 1}"}) for i, pages in enumerate(pages_variants)
    ]
    result = both(texts)
    assert result.steps["step_sequence"].tolist() == [1, 2, 3]


def test_steps_that_are_not_objects():
    result = only(["a string", ["a", "list"], None, 7, step("a"), {}])
    assert result.rejected["reason"].tolist() == ["step is not a JSON object"] * 4 + ["missing stepId"]
    assert result.rejected["raw_step"].tolist() == ['"a string"', '["a", "list"]', "null", "7", "{}"]
    assert result.steps["step_sequence"].tolist() == [5]


def test_odd_containers_follow_pythons_iteration():
    # "steps" as an object or a string: Python iterated its keys / characters (each a non-object step)
    texts = [
        text({**envelope([]), "pages": [{"steps": {"k1": 1, "k2": 2}}, {"steps": [step("a")]}]}),
        text({**envelope([]), "day": "2024-03-06", "pages": [{"steps": "ab"}]}),
        text({**envelope([]), "day": "2024-03-07", "pages": {}}),
        text({**envelope([]), "day": "2024-03-08", "pages": ""}),
    ]
    result = both(texts)
    assert result.rejected["raw_step"].tolist() == ['"k1"', '"k2"', '"a"', '"b"']
    assert result.steps["step_sequence"].tolist() == [3]


@pytest.mark.parametrize(
    "pages",
    [{"pages": None}, {"pages": 5}, {"pages": [5]}, {"pages": [{"steps": 5}]}, {"pages": [None]}],
)
def test_shapes_the_rules_cannot_read_raise_in_both(pages):
    body = {**envelope([]), **pages}
    with pytest.raises((TypeError, AttributeError)):
        journey_frames_reference([body], LOADED)
    with pytest.raises((TypeError, AttributeError)):
        journey_frames_from_json([text(body)], LOADED)


def test_missing_pages_raise_in_both():
    body = envelope([])
    del body["pages"]
    with pytest.raises(KeyError):
        journey_frames_from_json([text(body)], LOADED)


def test_duplicates_only_count_accepted_steps():
    steps = [
        step("a", -1),  # rejected: negative
        step("a", 2),  # accepted: the earlier "a" was rejected
        step("a", 3),  # duplicate of the accepted one
        step("a", "bad"),  # duplicate too: the duplicate rule comes before the value rules
        step("b", "bad"),
        step("b", "bad"),  # not a duplicate: no "b" was accepted
        step("b", 4),  # accepted
    ]
    result = only(steps)
    assert result.steps[["step_id", "step_sequence", "contact_count"]].values.tolist() == [["a", 2, 2], ["b", 7, 4]]
    assert result.rejected["reason"].tolist() == [
        "contactCount is negative",
        "duplicate stepId 'a' in the same day",
        "duplicate stepId 'a' in the same day",
        "contactCount is not a number",
        "contactCount is not a number",
    ]


def test_duplicates_are_per_envelope():
    texts = [text(envelope([[step("a")]], day="2024-03-05")), text(envelope([[step("a")]], day="2024-03-06"))]
    texts.append(texts[0])  # the same campaign-day twice: each envelope is its own day
    assert len(both(texts).steps) == 3


def test_unicode():
    steps = [
        step("ü-1", stepName="Ünïcödé ✓ 日本語 \U0001f600", exitReason="é"),
        step("ü-1"),
        step("it's", stepName='quote " and \\ and \n'),
        step("it's"),
        step("\u0000nul"),
    ]
    result = only(steps)
    assert result.steps["step_name"].tolist() == [
        "Ünïcödé ✓ 日本語 \U0001f600",
        'quote " and \\ and \n',
        "name \u0000nul",
    ]
    assert result.rejected["reason"].tolist() == [
        "duplicate stepId 'ü-1' in the same day",
        'duplicate stepId "it\'s" in the same day',
    ]


def test_unknown_fields_are_counted_per_step_on_every_object_step():
    steps = [
        step("a", experimentalBucket="x", variant=None),
        step("b", experimentalBucket=1),
        {"stepId": "c", "experimentalBucket": 2},  # rejected, still counted
        "not an object",
    ]
    result = only(steps)
    assert result.unknown_fields == {"experimentalBucket": 3, "variant": 1}


@pytest.mark.parametrize(
    ("campaign", "scorecard_id"),
    [
        ({"campaign": {"id": "c1", "scorecardId": "s9"}}, "s9"),
        ({"campaign": {"id": "c1"}}, None),
        ({"campaign": {"id": "c1", "scorecardId": None}}, None),
        ({"campaign": None}, None),
        ({"campaign": {}}, None),
        ({"campaign": []}, None),
        ({"campaign": {"scorecardId": 7}}, 7),
    ],
)
def test_scorecard_ids(campaign, scorecard_id):
    body = {**envelope([[step("a")]]), **campaign}
    assert both([text(body)]).steps["scorecard_id"].tolist() == [scorecard_id]


def test_no_campaign_at_all():
    body = envelope([[step("a")]])
    del body["campaign"]
    assert both([text(body)]).steps["scorecard_id"].tolist() == [None]


def test_several_days_and_campaigns_keep_input_order():
    texts = [
        text(envelope([[step("a"), "bad"], [step("b")]], campaign_id=cid, day=day))
        for cid in ("c2", "c1")
        for day in ("2024-03-06", "2024-03-05")
    ]
    result = both(texts)
    assert result.steps[["campaign_id", "step_id"]].values.tolist() == [
        [cid, s] for cid in ("c2", "c1") for _ in range(2) for s in ("a", "b")
    ]
    assert result.steps["extraction_date"].dt.day.tolist() == [6, 6, 5, 5] * 2
    assert validate(TABLES["fact_journey_step"], result.steps).passed
    assert validate(TABLES["rejected_journey_step"], result.rejected).passed


@pytest.mark.parametrize(
    "extracted_at",
    ["2024-03-06T01:00:00+00:00", "2024-03-06T01:00:00Z", "2024-03-06T06:30:00+05:30", "2024-03-06T01:00:00.5", None],
)
def test_extraction_instants(extracted_at):
    result = both([text({**envelope([[step("a"), 5]]), "extracted_at": extracted_at})])
    assert result.steps["extracted_at"].iloc[0] == result.rejected["extracted_at"].iloc[0] or extracted_at is None


def test_bytes_non_finite_numbers_and_empty_input():
    raw = text(envelope([[step("a", rate=float("nan")), step("b", 1, averageScore=float("-inf")), step("c")]]))
    result = both([raw.encode()])
    assert result.rejected["raw_step"].iloc[0].count("NaN") == 1
    empty = journey_frames_from_json([], LOADED)
    assert_same(empty, journey_frames_reference([], LOADED))
    assert empty.steps.dtypes.to_dict() == journey_frames_reference([], LOADED).steps.dtypes.to_dict()


def test_repeated_keys_take_the_last_value_as_pythons_json_does():
    raw = (
        '{"source_id":"c1","day":"2024-03-05","extracted_at":"2024-03-06T00:00:00Z","pages":[{"steps":['
        '{"stepId":"a","contactCount":"bad","conversionRate":0.5,"contactCount":4},'
        '{"stepId":null,"stepId":"b","contactCount":1,"conversionRate":0.5}]}]}'
    )
    assert both([raw]).steps["contact_count"].tolist() == [4, 1]
