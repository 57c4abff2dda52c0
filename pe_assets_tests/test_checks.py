"""Cross-table and freshness checks, run through Dagster against a seeded DuckDB (and fakesnow)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from pe_assets.defs.common.checks import (
    CAMPAIGN_IN_DIM,
    campaign_in_dim_verdicts,
    journey_freshness_checks,
    markdown,
    markdown_rows,
    tuples_by_day,
)
from pe_assets.defs.common.resources import UtcClock
from pe_assets.defs.common.tables import GraphParts
from pe_assets.defs.predictive_engagement.checks import (
    FINAL_SNAPSHOT_FRESHNESS,
    SCORECARD_SNAPSHOT_FOR_DAY,
    late_scorecards,
    scorecard_snapshot_verdicts,
)
from pe_assets.rules import PartitionWindow, latest_due_day, range_tags
from pe_assets.schemas import TABLES, typed_frame
from pe_assets.warehouse import DuckDBWarehouse, WarehouseResource
from pe_dev.pipeline import project_defs, settings_for_tests

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.SupersessionWarning)

D1, D2, D3 = date(2024, 3, 5), date(2024, 3, 6), date(2024, 3, 7)
WINDOW = PartitionWindow(D1, D3 + timedelta(days=1))
LOADED = pd.Timestamp("2024-03-20 12:00")

JOURNEY_CHECK = dg.AssetCheckKey(dg.AssetKey("fact_journey_step"), CAMPAIGN_IN_DIM)
SCORECARD_CHECK = dg.AssetCheckKey(dg.AssetKey("fact_scorecard_performance"), SCORECARD_SNAPSHOT_FOR_DAY)
FINAL_CHECK = dg.AssetCheckKey(dg.AssetKey("fact_scorecard_performance"), FINAL_SNAPSHOT_FRESHNESS)


# -- seeding ----------------------------------------------------------------------------------------


def _campaign(campaign_id: str, scorecard_id: str | None) -> dict:
    return {
        "campaign_id": campaign_id,
        "campaign_name": campaign_id.upper(),
        "status": "active",
        "scorecard_id": scorecard_id,
        "created_date": None,
        "updated_date": None,
        "listed_at": LOADED,
    }


def _step(campaign_id: str, day: date, sequence: int, scorecard_id: str | None) -> dict:
    return {
        "campaign_id": campaign_id,
        "extraction_date": pd.Timestamp(day),
        "step_id": f"{campaign_id}-s{sequence}",
        "step_name": None,
        "step_sequence": sequence,
        "contact_count": 100 - sequence,
        "conversion_rate": 0.5,
        "average_score": None,
        "exit_reason": None,
        "scorecard_id": scorecard_id,
        "extracted_at": LOADED,
        "load_timestamp": LOADED,
    }


def _snapshot(scorecard_id: str, day: date, *, pending: bool, hour: int = 0) -> dict:
    return {
        "scorecard_id": scorecard_id,
        "extraction_date": pd.Timestamp(day),
        "scorecard_name": None,
        "model_version": "1",
        "retraining_timestamp": None,
        "precision": 0.7,
        "recall": 0.6,
        "f1_score": 0.65,
        "auc": 0.8,
        "actual_conversion_rate": 0.2,
        "predicted_conversion_rate": 0.25,
        "pending_backfill": pending,
        "extracted_at": pd.Timestamp(day) + pd.Timedelta(hours=3 if pending else 80 + hour),
    }


def seed(warehouse: WarehouseResource) -> None:
    """Three days. c1 -> s1, c2 -> s2 are in the dimension; c9 -> s3 is not.

    D1: c9 is an orphan (2 rows); s1 final, s2 only pending, s3 has no snapshot -> ERROR, ERROR.
    D2: s1 final, s2 only pending -> campaign check passes, scorecard check WARN.
    D3: everything final -> both pass.
    """
    warehouse.replace_table(
        TABLES["dim_predictive_campaign"],
        typed_frame(TABLES["dim_predictive_campaign"], [_campaign("c1", "s1"), _campaign("c2", "s2")]),
    )
    steps = [_step("c1", day, n, "s1") for day in (D1, D2, D3) for n in (1, 2)]
    steps += [_step("c2", day, n, "s2") for day in (D1, D2, D3) for n in (1, 2, 3)]
    steps += [_step("c9", D1, n, "s3") for n in (1, 2)]
    warehouse.replace_partition(TABLES["fact_journey_step"], typed_frame(TABLES["fact_journey_step"], steps), WINDOW)
    snapshots = [
        _snapshot("s1", D1, pending=True),
        _snapshot("s1", D1, pending=False),
        _snapshot("s2", D1, pending=True),
        _snapshot("s1", D2, pending=False),
        _snapshot("s2", D2, pending=True),
        _snapshot("s1", D3, pending=False),
        _snapshot("s2", D3, pending=True),
        _snapshot("s2", D3, pending=False),
    ]
    perf = TABLES["fact_scorecard_performance"]
    warehouse.replace_partition(perf, typed_frame(perf, snapshots), WINDOW)


# -- running checks through Dagster ----------------------------------------------------------------


def _definitions(
    warehouse: WarehouseResource, check_keys: Sequence[dg.AssetCheckKey], *, partitioned: bool, clock: UtcClock
) -> dg.Definitions:
    """The code location's definitions, with one job that runs only ``check_keys``."""
    partitions = GraphParts.from_settings(settings_for_tests()).partitions
    job = dg.define_asset_job(
        "checks_only",
        selection=dg.AssetSelection.checks(*check_keys),
        partitions_def=partitions if partitioned else None,
    )
    return project_defs({"warehouse": warehouse, "clock": clock}, jobs=[job])


def run_checks(
    warehouse: WarehouseResource,
    check_keys: Sequence[dg.AssetCheckKey],
    instance: dg.DagsterInstance,
    *,
    first: date | None = None,
    last: date | None = None,
    clock: UtcClock | None = None,
) -> dg.ExecuteInProcessResult:
    """Only the checks, as a ranged run over [first, last] (or unpartitioned without days)."""
    partitioned = first is not None
    defs = _definitions(warehouse, check_keys, partitioned=partitioned, clock=clock or UtcClock())
    tags = range_tags(first, last) if first and last else {}
    return defs.resolve_job_def("checks_only").execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def _by_partition(
    result: dg.ExecuteInProcessResult, key: dg.AssetCheckKey
) -> dict[str | None, dg.AssetCheckEvaluation]:
    return {e.partition: e for e in result.get_asset_check_evaluations() if e.asset_check_key == key}


@pytest.fixture
def duckdb_warehouse(tmp_path: Path) -> DuckDBWarehouse:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    seed(warehouse)
    return warehouse


# -- referential integrity and scorecard completeness ----------------------------------------------


def test_campaign_check_catches_the_orphan_rows_per_partition(duckdb_warehouse):
    instance = dg.DagsterInstance.ephemeral()
    result = run_checks(duckdb_warehouse, [JOURNEY_CHECK], instance, first=D1, last=D3)
    assert result.success  # a failed check fails no step: it is recorded
    evaluations = _by_partition(result, JOURNEY_CHECK)
    assert set(evaluations) == {D1.isoformat(), D2.isoformat(), D3.isoformat()}

    bad = evaluations[D1.isoformat()]
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    assert bad.metadata["orphan_rows"].value == 2
    assert bad.metadata["rows_checked"].value == 7
    assert bad.metadata["orphan_campaigns"].value == ["c9"]
    sample = bad.metadata["first_orphan_rows"].value
    assert "c9-s1" in sample and "c9-s2" in sample and "c1-s1" not in sample
    for day in (D2, D3):
        good = evaluations[day.isoformat()]
        assert good.passed and good.metadata["orphan_rows"].value == 0

    # Recorded per partition in the instance, latest status per day.
    info = {
        i.partition_key: i.latest_execution_status
        for i in instance.event_log_storage.get_asset_check_partition_info([JOURNEY_CHECK])
    }
    assert {k: v.value for k, v in info.items()} == {
        D1.isoformat(): "FAILED",
        D2.isoformat(): "SUCCEEDED",
        D3.isoformat(): "SUCCEEDED",
    }

    # Fix the dimension and re-check D1 alone: its latest record turns green, history keeps the failure.
    dim = TABLES["dim_predictive_campaign"]
    duckdb_warehouse.replace_table(
        dim, typed_frame(dim, [_campaign("c1", "s1"), _campaign("c2", "s2"), _campaign("c9", "s3")])
    )
    assert run_checks(duckdb_warehouse, [JOURNEY_CHECK], instance, first=D1, last=D1).success
    history = [
        r
        for r in instance.event_log_storage.get_asset_check_execution_history(JOURNEY_CHECK, limit=10)
        if r.partition == D1.isoformat()
    ]
    assert [r.status.value for r in history] == ["SUCCEEDED", "FAILED"]


def test_scorecard_completeness_is_error_when_missing_and_warn_when_only_pending(duckdb_warehouse):
    instance = dg.DagsterInstance.ephemeral()
    result = run_checks(duckdb_warehouse, [SCORECARD_CHECK], instance, first=D1, last=D3)
    assert result.success
    evaluations = _by_partition(result, SCORECARD_CHECK)

    missing = evaluations[D1.isoformat()]  # s3 has no snapshot at all (and s2 only pending)
    assert not missing.passed and missing.severity == dg.AssetCheckSeverity.ERROR
    assert missing.metadata["missing_scorecards"].value == ["s3"]
    assert missing.metadata["pending_only_scorecards"].value == ["s2"]

    pending = evaluations[D2.isoformat()]
    assert not pending.passed and pending.severity == dg.AssetCheckSeverity.WARN
    assert pending.metadata["missing_scorecards"].value == []
    assert pending.metadata["pending_only_scorecards"].value == ["s2"]

    final = evaluations[D3.isoformat()]
    assert final.passed
    assert final.metadata["referenced_scorecards"].value == 2
    assert final.metadata["final_scorecards"].value == 2

    info = {
        i.partition_key: i.latest_execution_status.value
        for i in instance.event_log_storage.get_asset_check_partition_info([SCORECARD_CHECK])
    }
    assert info == {D1.isoformat(): "FAILED", D2.isoformat(): "FAILED", D3.isoformat(): "SUCCEEDED"}


def test_single_partition_run_records_that_partition(duckdb_warehouse):
    instance = dg.DagsterInstance.ephemeral()
    defs = _definitions(duckdb_warehouse, [JOURNEY_CHECK, SCORECARD_CHECK], partitioned=True, clock=UtcClock())
    # A checks-only job has no asset to validate ``partition_key=`` against: set the run's partition tag.
    job = defs.resolve_job_def("checks_only")
    result = job.execute_in_process(instance=instance, tags={"dagster/partition": D2.isoformat()})
    assert result.success
    assert {(e.asset_check_key.name, e.partition, e.passed) for e in result.get_asset_check_evaluations()} == {
        (CAMPAIGN_IN_DIM, D2.isoformat(), True),
        (SCORECARD_SNAPSHOT_FOR_DAY, D2.isoformat(), False),
    }


def test_cross_table_sql_runs_on_snowflake(tmp_path):
    from pe_dev.fakesnow import fakesnow_warehouse

    with fakesnow_warehouse(tmp_path) as warehouse:
        seed(warehouse)
        campaign = campaign_in_dim_verdicts(warehouse, "fact_journey_step", WINDOW)
        scorecards = scorecard_snapshot_verdicts(warehouse, WINDOW)
        _, late = late_scorecards(warehouse, datetime(2024, 3, 10, 9, tzinfo=UTC), date(2024, 1, 1))
    assert [campaign[d].passed for d in WINDOW.days] == [False, True, True]
    assert campaign[D1].metadata["orphan_rows"] == 2
    assert [(scorecards[d].passed, scorecards[d].severity) for d in WINDOW.days] == [
        (False, dg.AssetCheckSeverity.ERROR),
        (False, dg.AssetCheckSeverity.WARN),
        (True, dg.AssetCheckSeverity.ERROR),  # a passing verdict keeps the default severity
    ]
    assert [(d, s) for d, s in zip(late["day"], late["scorecard_id"], strict=True)] == [
        (D1, "s2"),
        (D1, "s3"),
        (D2, "s2"),
    ]


# -- freshness -------------------------------------------------------------------------------------


def test_final_snapshot_deadline_is_48h_plus_grace_after_the_day_ends():
    # Day D ends at D+1 00:00; due 56 h later, at D+3 08:00 UTC.
    assert latest_due_day(datetime(2024, 3, 10, 8, 0, tzinfo=UTC)) == date(2024, 3, 7)
    assert latest_due_day(datetime(2024, 3, 10, 7, 59, tzinfo=UTC)) == date(2024, 3, 6)


def test_final_snapshot_freshness_warns_about_days_past_their_deadline(duckdb_warehouse):
    instance = dg.DagsterInstance.ephemeral()
    # 2024-03-09 09:00: due days up to D1 (2024-03-05 ended 03-06 00:00, due 03-08 08:00); D2 due 03-09 08:00.
    late_clock = UtcClock(frozen_at=datetime(2024, 3, 9, 9, tzinfo=UTC).isoformat())
    result = run_checks(duckdb_warehouse, [FINAL_CHECK], instance, clock=late_clock)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.partition is None
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["late_days"].value == [D1.isoformat(), D2.isoformat()]
    assert evaluation.metadata["late_scorecard_days"].value == 3  # D1: s2, s3; D2: s2

    # Before D1 is due nothing is late; the result says until when it stays fresh (D1's deadline).
    early_clock = UtcClock(frozen_at=datetime(2024, 3, 8, 7, tzinfo=UTC).isoformat())
    [evaluation] = run_checks(
        duckdb_warehouse, [FINAL_CHECK], instance, clock=early_clock
    ).get_asset_check_evaluations()
    assert evaluation.passed
    fresh_until = evaluation.metadata["dagster/fresh_until_timestamp"].value
    assert datetime.fromtimestamp(fresh_until, UTC) == datetime(2024, 3, 8, 8, tzinfo=UTC)


def _expected_journey_partition(now: datetime) -> str:
    """The day the 02:00 deadline currently asks for: the day before the last 02:00 tick."""
    tick = datetime.combine(now.date(), datetime.min.time(), UTC) + timedelta(hours=2)
    if now < tick:
        tick -= timedelta(days=1)
    return (tick.date() - timedelta(days=1)).isoformat()


def test_journey_freshness_expects_yesterday_by_0200_utc(duckdb_warehouse):
    instance = dg.DagsterInstance.ephemeral()
    expected = _expected_journey_partition(datetime.now(UTC))
    instance.report_runless_asset_event(dg.AssetMaterialization("fact_journey_step", partition=expected))
    keys = [spec.key for c in journey_freshness_checks() for spec in c.check_specs]
    result = run_checks(duckdb_warehouse, keys, instance)
    assert result.success
    outcome = {e.asset_key.to_user_string(): (e.passed, e.severity) for e in result.get_asset_check_evaluations()}
    assert outcome == {
        "fact_journey_step": (True, dg.AssetCheckSeverity.ERROR),
        "fact_predictive_journey": (False, dg.AssetCheckSeverity.ERROR),
    }


def test_freshness_sensor_requests_the_never_run_freshness_checks(duckdb_warehouse):
    defs = project_defs({"warehouse": duckdb_warehouse})
    requested: set[dg.AssetCheckKey] = set()
    for name in ("pe_freshness_checks_sensor", "pe_final_snapshot_freshness_sensor"):
        context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), definitions=defs)
        [request] = defs.resolve_sensor_def(name).evaluate_tick(context).run_requests
        requested |= set(request.asset_check_keys or [])
    assert requested == {
        dg.AssetCheckKey(dg.AssetKey("fact_journey_step"), "freshness_check"),
        dg.AssetCheckKey(dg.AssetKey("fact_predictive_journey"), "freshness_check"),
        FINAL_CHECK,
    }
    for name in ("pe_freshness_checks_sensor", "pe_final_snapshot_freshness_sensor"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


def test_final_snapshot_freshness_on_a_new_empty_warehouse_passes(tmp_path):
    """The freshness sensor runs it on a fresh deployment before any load: no tables, nothing late."""
    empty = DuckDBWarehouse(path=str(tmp_path / "empty.duckdb"))
    result = run_checks(empty, [FINAL_CHECK], dg.DagsterInstance.ephemeral())
    [evaluation] = result.get_asset_check_evaluations()
    assert result.success and evaluation.passed
    assert evaluation.metadata["late_scorecard_days"].value == 0


def test_markdown_renders_a_pipe_table_with_blanks_for_nulls_and_counts_the_rest():
    frame = pd.DataFrame(
        {"campaign_id": ["c|1", "c2", "c3"], "psi": [0.25, float("nan"), 1e-7], "model": [None, "v2", pd.NA]}
    )
    assert markdown(frame.iloc[:0]).value == "_none_"
    assert markdown(frame, max_rows=2).value == (
        "| campaign_id | psi | model |\n|---|---|---|\n| c\\|1 | 0.25 |  |\n| c2 |  | v2 |\n\n_and 1 more rows_"
    )
    assert markdown(frame).value.splitlines()[-1] == "| c3 | 1e-07 |  |"


def test_tuples_by_day_keeps_frame_order_and_leaves_out_days_without_rows() -> None:
    frame = pd.DataFrame(
        {
            "extraction_date": pd.to_datetime(["2025-03-02", "2025-03-01", "2025-03-02"]),
            "campaign_id": ["b", "a", "a"],
            "rows": [2, 1, 3],
        }
    )
    by_day = tuples_by_day(frame, ["campaign_id", "rows"])
    assert by_day == {date(2025, 3, 2): [("b", 2), ("a", 3)], date(2025, 3, 1): [("a", 1)]}
    assert tuples_by_day(frame.iloc[:0], ["campaign_id"]) == {}


def test_markdown_rows_renders_as_markdown_of_the_frame() -> None:
    frame = pd.DataFrame({"scorecard_id": ["s1", "s2", "s3"], "psi": [0.25, None, 1.5]})
    rows = list(frame.itertuples(index=False, name=None))
    assert markdown_rows(list(frame.columns), rows[:2], more=1) == markdown(frame, max_rows=2)
    assert markdown_rows(["psi"], []) == markdown(frame.iloc[:0]) == dg.MetadataValue.md("_none_")
    assert "_and 1 more rows_" in markdown(frame, max_rows=2).value
