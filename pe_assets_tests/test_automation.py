"""Schedules and sensors: what they request, that they request it once, and that the runs work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from pe_assets.defs.common.resources import UtcClock
from pe_assets.defs.common.tables import GraphParts
from pe_assets.defs.predictive_engagement.automation import build_retraining_sensor
from pe_assets.rules import RANGE_END_TAG, RANGE_START_TAG, PartitionWindow
from pe_assets.schemas import TABLES, typed_frame
from pe_assets.warehouse import DuckDBWarehouse
from pe_dev.pipeline import pipeline_resources, project_defs, run_days, settings_for_tests

REPO = Path(__file__).resolve().parents[1]
PERF = TABLES["fact_scorecard_performance"]


def _at(day: date, hour: int = 0) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=hour)


def _clock(now: datetime) -> UtcClock:
    return UtcClock(frozen_at=now.isoformat())


DEFS = project_defs()
final_outcomes_sensor = DEFS.resolve_sensor_def("final_outcomes_sensor")
scorecard_retraining_sensor = DEFS.resolve_sensor_def("scorecard_retraining_sensor")
pe_daily_schedule = DEFS.resolve_schedule_def("pe_daily_schedule")
pe_late_data_schedule = DEFS.resolve_schedule_def("pe_late_data_schedule")


def _definitions(sensor: dg.SensorDefinition, resources: dict[str, object]) -> dg.Definitions:
    """The code location's definitions with ``sensor`` (maybe a variant) and ``resources`` over stand-ins."""
    defs = project_defs(resources)
    if sensor.name in {s.name for s in defs.sensors}:
        return defs
    return dg.Definitions.merge(defs, dg.Definitions(sensors=[sensor]))


def _tick(sensor: dg.SensorDefinition, cursor: str | None, **resources: object) -> dg.SensorExecutionData:
    """One evaluation, as the daemon does it: partitioned requests are resolved against the job."""
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        cursor=cursor,
        resources=resources,
        definitions=_definitions(sensor, resources),
    )
    return sensor.evaluate_tick(context)


# -- schedules ----------------------------------------------------------------------------------------


def test_definitions_register_schedules_and_sensors_running_by_default():
    schedules, sensors = list(DEFS.schedules), [final_outcomes_sensor, scorecard_retraining_sensor]
    assert {s.name for s in schedules} == {"pe_daily_schedule", "pe_late_data_schedule"}
    assert {s.name for s in DEFS.sensors} == {
        "final_outcomes_sensor",
        "scorecard_retraining_sensor",
        "pe_freshness_checks_sensor",
        "pe_final_snapshot_freshness_sensor",
    }
    for schedule in schedules:
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        assert schedule.execution_timezone == "UTC"
    for sensor in sensors:
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.minimum_interval_seconds == 3600
    refresh_job = DEFS.resolve_job_def("pe_scorecard_refresh_job")
    selected = {key.to_user_string() for key in refresh_job.asset_layer.selected_asset_keys}
    assert selected == {
        "raw_scorecards",
        "fact_scorecard_performance",
        "fact_scorecard_score_distribution",
        "fact_predictive_journey",
        "scorecard_drift",
        "funnel_daily",
        "funnel_daily_snapshot",
    }


def test_daily_schedule_requests_yesterday_at_0015_utc():
    assert pe_daily_schedule.cron_schedule == "15 0 * * *"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2025, 3, 10, 0, 15, tzinfo=UTC))
    [request] = pe_daily_schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2025-03-09"


def test_late_data_schedule_requests_the_last_three_days_as_one_ranged_run():
    assert pe_late_data_schedule.cron_schedule == "0 6 * * *"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2025, 3, 10, 6, tzinfo=UTC))
    [request] = pe_late_data_schedule.evaluate_tick(context).run_requests
    assert request.partition_key is None
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2025-03-07", "2025-03-09")
    assert request.run_key == "late-data:2025-03-07...2025-03-09"


# -- sensor A: final outcomes after 48 hours ----------------------------------------------------------


def _snapshot(scorecard_id: str, day: date, extracted_at: datetime, pending: bool, version: str = "1") -> dict:
    return {
        "scorecard_id": scorecard_id,
        "extraction_date": pd.Timestamp(day),
        "scorecard_name": f"Scorecard {scorecard_id}",
        "model_version": version,
        "retraining_timestamp": pd.Timestamp("2025-01-01"),
        "precision": 0.8,
        "recall": 0.7,
        "f1_score": 0.75,
        "auc": 0.9,
        "actual_conversion_rate": 0.2,
        "predicted_conversion_rate": 0.25,
        "pending_backfill": pending,
        "extracted_at": pd.Timestamp(extracted_at.replace(tzinfo=None)),
    }


def _seed(warehouse: DuckDBWarehouse, rows: list[dict], first: date, last: date) -> None:
    window = PartitionWindow(start=first, end=last + timedelta(days=1))
    warehouse.replace_partition(PERF, typed_frame(PERF, rows), window)


D1, D2, D3, D4 = date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3), date(2025, 3, 4)


@pytest.fixture
def seeded_warehouse(tmp_path) -> DuckDBWarehouse:
    """Four days: D1 pending, D2 pending then final, D3 pending for one of two scorecards, D4 pending."""
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    rows = [
        _snapshot("sc-a", D1, _at(D2, 1), pending=True),
        _snapshot("sc-a", D2, _at(D3, 1), pending=True),
        _snapshot("sc-a", D2, _at(D4, 6), pending=False),  # the latest: final
        _snapshot("sc-a", D3, _at(D4, 1), pending=True),
        _snapshot("sc-a", D3, _at(D4 + timedelta(days=2), 6), pending=False),
        _snapshot("sc-b", D3, _at(D4, 1), pending=True),  # sc-b's latest is still pending
        _snapshot("sc-a", D4, _at(D4 + timedelta(days=1), 1), pending=True),
    ]
    _seed(warehouse, rows, D1, D4)
    return warehouse


def test_final_outcomes_requested_once_per_day_after_48_hours(seeded_warehouse):
    now = _at(D4 + timedelta(days=2), 12)  # D3 ended 60 h ago, D4 36 h ago
    first = _tick(final_outcomes_sensor, None, warehouse=seeded_warehouse, clock=_clock(now))
    assert [(r.partition_key, r.run_key) for r in first.run_requests] == [
        ("2025-03-01", "final-outcomes:2025-03-01"),
        ("2025-03-03", "final-outcomes:2025-03-03"),
    ]
    assert json.loads(first.cursor) == {"requested": ["2025-03-01", "2025-03-03"]}

    # Same warehouse, same time: nothing new.
    second = _tick(final_outcomes_sensor, first.cursor, warehouse=seeded_warehouse, clock=_clock(now))
    assert second.run_requests == [] and second.skip_message
    assert second.cursor == first.cursor

    # 24 hours on, D4's 48 hours are over too: only D4 is requested.
    later = now + timedelta(hours=24)
    third = _tick(final_outcomes_sensor, second.cursor, warehouse=seeded_warehouse, clock=_clock(later))
    assert [r.run_key for r in third.run_requests] == ["final-outcomes:2025-03-04"]
    fourth = _tick(final_outcomes_sensor, third.cursor, warehouse=seeded_warehouse, clock=_clock(later))
    assert fourth.run_requests == []


def test_the_48_hour_boundary_is_exclusive(seeded_warehouse):
    exactly = _at(D4 + timedelta(days=3))  # D4 ended exactly 48 h ago: not yet "more than 48 h"
    result = _tick(final_outcomes_sensor, None, warehouse=seeded_warehouse, clock=_clock(exactly))
    assert "final-outcomes:2025-03-04" not in [r.run_key for r in result.run_requests]
    after = exactly + timedelta(seconds=1)
    result = _tick(final_outcomes_sensor, result.cursor, warehouse=seeded_warehouse, clock=_clock(after))
    assert [r.run_key for r in result.run_requests] == ["final-outcomes:2025-03-04"]


def test_cursor_forgets_days_once_their_final_snapshot_landed(seeded_warehouse):
    now = _at(D4 + timedelta(days=2), 12)
    first = _tick(final_outcomes_sensor, None, warehouse=seeded_warehouse, clock=_clock(now))
    assert json.loads(first.cursor)["requested"] == ["2025-03-01", "2025-03-03"]
    # The requested re-extraction of D1 lands a final snapshot.
    _seed(
        seeded_warehouse,
        [
            _snapshot("sc-a", D1, _at(D2, 1), pending=True),
            _snapshot("sc-a", D1, _at(D4 + timedelta(days=2), 13), pending=False),
        ],
        D1,
        D1,
    )
    second = _tick(final_outcomes_sensor, first.cursor, warehouse=seeded_warehouse, clock=_clock(now))
    assert second.run_requests == []
    assert json.loads(second.cursor) == {"requested": ["2025-03-03"]}


def test_final_outcomes_sensor_skips_an_empty_warehouse(tmp_path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "empty.duckdb"))
    result = _tick(final_outcomes_sensor, None, warehouse=warehouse, clock=_clock(datetime.now(UTC)))
    assert result.run_requests == [] and json.loads(result.cursor) == {"requested": []}


def test_final_outcomes_end_to_end_against_the_simulator(make_simulator, tmp_path):
    """Extract early (pending), let 48 h pass, run what the sensor asks for: the day becomes final."""
    sim = make_simulator(seed=7)
    day = date(2024, 3, 5)
    early = _at(day + timedelta(days=1), 3)
    sim.set_now(early)
    assert run_days(pipeline_resources(sim, tmp_path, now=early), day, day).success
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))

    late = early + timedelta(days=3)
    sim.set_now(late)
    tick = _tick(final_outcomes_sensor, None, warehouse=warehouse, clock=_clock(late))
    [request] = tick.run_requests
    assert (request.partition_key, request.run_key) == ("2024-03-05", "final-outcomes:2024-03-05")

    defs = project_defs(pipeline_resources(sim, tmp_path, now=late, warehouse=warehouse))
    result = defs.resolve_job_def("pe_scorecard_refresh_job").execute_in_process(
        partition_key=request.partition_key, tags=request.tags, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {
        "raw_scorecards",
        "fact_scorecard_performance",
        "fact_scorecard_score_distribution",
        "fact_predictive_journey",
        "scorecard_drift",
        "funnel_daily",
        "funnel_daily_snapshot",
    }
    after = _tick(final_outcomes_sensor, tick.cursor, warehouse=warehouse, clock=_clock(late))
    assert after.run_requests == [] and json.loads(after.cursor) == {"requested": []}
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute(
            "SELECT DISTINCT pending_backfill FROM fact_predictive_journey WHERE scorecard_id IS NOT NULL"
        ).fetchall() == [(False,)]


# -- sensor B: retraining -----------------------------------------------------------------------------


def _listing_requests(sim) -> int:
    return sum(1 for r in sim.log_records() if r["path"].endswith("/scorecards"))


def test_retraining_requested_exactly_once(simulator, tmp_path):
    resources = pipeline_resources(simulator, tmp_path)
    clock = _clock(datetime(2025, 3, 10, 9, tzinfo=UTC))
    api = resources["pe_api"]

    first = _tick(scorecard_retraining_sensor, None, pe_api=api, clock=clock)
    assert first.run_requests == [] and "first tick" in (first.skip_message or "")
    versions = json.loads(first.cursor)["versions"]
    assert versions == {s["id"]: s["modelVersion"] for s in simulator.scorecards()}
    assert _listing_requests(simulator) == 1  # one listing page, no request per scorecard

    second = _tick(scorecard_retraining_sensor, first.cursor, pe_api=api, clock=clock)
    assert second.run_requests == [] and second.cursor == first.cursor

    scorecard_id = sorted(versions)[0]
    new_version = simulator.retrain_scorecard(scorecard_id)["modelVersion"]
    assert new_version != versions[scorecard_id]
    third = _tick(scorecard_retraining_sensor, second.cursor, pe_api=api, clock=clock)
    [request] = third.run_requests
    assert request.run_key == f"retrained:{scorecard_id}:{new_version}"
    assert request.partition_key is None
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2025-02-08", "2025-03-09")  # 30 days
    assert json.loads(third.cursor)["versions"][scorecard_id] == new_version

    fourth = _tick(scorecard_retraining_sensor, third.cursor, pe_api=api, clock=clock)
    assert fourth.run_requests == []
    assert _listing_requests(simulator) == 4


def test_retraining_run_reextracts_the_window_with_the_new_version(make_simulator, tmp_path):
    sim = make_simulator(seed=7)
    now = datetime(2024, 3, 8, 12, tzinfo=UTC)
    sim.set_now(now)
    resources = pipeline_resources(sim, tmp_path, now=now)
    assert run_days(resources, date(2024, 3, 5), date(2024, 3, 7)).success
    sensor = _retraining_sensor(lookback_days=2)
    clock = _clock(now)
    first = _tick(sensor, None, pe_api=resources["pe_api"], clock=clock)
    scorecard_id = sorted(json.loads(first.cursor)["versions"])[-1]
    new_version = sim.retrain_scorecard(scorecard_id)["modelVersion"]
    [request] = _tick(sensor, first.cursor, pe_api=resources["pe_api"], clock=clock).run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2024-03-06", "2024-03-07")

    result = (
        project_defs(resources)
        .resolve_job_def("pe_scorecard_refresh_job")
        .execute_in_process(tags=request.tags, instance=dg.DagsterInstance.ephemeral())
    )
    assert result.success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        per_day = dict(
            con.execute(
                "SELECT CAST(extraction_date AS VARCHAR), count(*) FROM fact_scorecard_performance "
                "WHERE scorecard_id = ? AND model_version = ? GROUP BY 1 ORDER BY 1",
                [scorecard_id, new_version],
            ).fetchall()
        )
        latest = con.execute(
            "SELECT DISTINCT model_version FROM fact_predictive_journey WHERE scorecard_id = ? "
            "AND extraction_date >= DATE '2024-03-06'",
            [scorecard_id],
        ).fetchall()
    assert per_day == {"2024-03-06": 1, "2024-03-07": 1}  # the window only, old snapshots kept beside
    assert latest == [(new_version,)]


def _retraining_sensor(lookback_days: int) -> dg.SensorDefinition:
    """The shipped retraining sensor with another lookback, targeting the real refresh job."""
    parts = GraphParts.from_settings(settings_for_tests())
    refresh_job = next(j for j in DEFS.jobs if j.name == "pe_scorecard_refresh_job")
    return build_retraining_sensor(parts, refresh_job, lookback_days=lookback_days, name="retraining_variant")


def test_retraining_sensor_rejects_a_silly_lookback():
    with pytest.raises(ValueError):
        _retraining_sensor(lookback_days=0)


# -- the code location --------------------------------------------------------------------------------


def test_dagster_definitions_validate(tmp_path):
    env = {
        **os.environ,
        "GENESYSCLOUD_OAUTHCLIENT_ID": "dummy-id",
        "GENESYSCLOUD_OAUTHCLIENT_SECRET": "dummy-secret",
        "PE_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    (tmp_path / "dagster_home").mkdir()
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "pe_assets.definitions"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr
