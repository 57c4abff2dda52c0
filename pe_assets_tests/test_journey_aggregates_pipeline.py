"""PE_SOURCE=journey-aggregates end to end: the code location's real graph against the simulator's
Genesys journey endpoints over loopback HTTP, into DuckDB (and the Snowflake path on fakesnow)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pe_assets.defs.journey_aggregates.assets import ACTION_MAP_LISTING, RAW_AGGREGATES, contiguous_ranges
from pe_assets.landing import LandingZone
from pe_assets.rules import PartitionWindow
from pe_assets.schemas import TABLES
from pe_assets.transform.journey_aggregates import FUNNEL_STEPS
from pe_assets.warehouse import WarehouseResource
from pe_dev.chaos import failure_messages, step_retries
from pe_dev.fakesnow import fakesnow_warehouse
from pe_dev.pipeline import pipeline_resources, project_defs, run_days, settings_for_tests
from pe_dev.simulator import AGGREGATE_PERMISSION, ClientSpec

DAY = date(2024, 3, 5)
NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)  # long after every test day: all buckets are complete
SETTINGS = settings_for_tests(PE_SOURCE="journey-aggregates", PE_STEP_RETRY_DELAY_SECONDS="0.1")
QUERY_PATH = "/aggregates/query"
JOBS_PATH = "/aggregates/jobs"


def _sim(make_simulator, **overrides):
    config = {"client_limit": 100_000, "org_limit": 100_000, "journey_job_delay": 0.2, **overrides}
    sim = make_simulator(**config)
    sim.set_now(NOW, frozen=False)  # async jobs finish as the simulator's time runs on
    return sim


def _run(sim, tmp_path: Path, first: date, last: date, **resource_overrides) -> dg.ExecuteInProcessResult:
    resources = pipeline_resources(sim, tmp_path, now=NOW, **resource_overrides)
    return run_days(resources, first, last, settings=SETTINGS)


def _steps(warehouse_path: Path) -> dict[tuple[str, date], dict[str, int]]:
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        rows = con.execute(
            "SELECT campaign_id, extraction_date, step_id, contact_count FROM fact_journey_step"
        ).fetchall()
    out: dict[tuple[str, date], dict[str, int]] = {}
    for campaign_id, day, step_id, count in rows:
        out.setdefault((campaign_id, day), {})[step_id] = count
    return out


def _truth(sim, days: list[date]) -> dict[tuple[str, date], dict[str, int]]:
    truth = {}
    for action_map in sim.action_maps():
        for day in days:
            funnel = sim.expected_action_map_funnel(action_map["id"], day)
            if funnel is not None:
                truth[(action_map["id"], day)] = funnel
    return truth


def test_the_graph_calls_no_seed_endpoint_and_has_no_scorecard_assets():
    defs = project_defs(settings=SETTINGS)
    keys = {key.to_user_string() for a in defs.assets or [] for key in a.keys}
    assert keys == {
        "raw_journey_aggregates",
        "fact_journey_step",
        "fact_predictive_journey",
        "dim_predictive_campaign",
        "dim_action_map",
        "funnel_daily",
        "funnel_daily_snapshot",
    }
    assert {s.name for s in defs.sensors or []} == {"pe_freshness_checks_sensor"}
    assert {s.name for s in defs.schedules or []} == {"pe_daily_schedule", "pe_late_data_schedule"}
    tags = {spec.tags.get("pe_assets/source") for a in defs.assets or [] for spec in a.specs}
    assert tags == {"journey-aggregates"}


def test_one_day_equals_the_simulators_truth(make_simulator, tmp_path):
    sim = _sim(make_simulator)
    result = _run(sim, tmp_path, DAY, DAY)
    assert result.success, failure_messages(result)
    steps = _steps(tmp_path / "warehouse.duckdb")
    assert steps == _truth(sim, [DAY])
    assert sim.count_requests("predictive-engagement") == 0
    assert sim.count_requests(QUERY_PATH) == 1
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        sequence = con.execute(
            "SELECT step_id, step_sequence, exit_reason FROM fact_journey_step GROUP BY ALL ORDER BY 2"
        ).fetchall()
        rates = con.execute(
            "SELECT count(*) FILTER (WHERE step_id = 'nWebActionsQualified' AND conversion_rate <> 1.0 "
            "AND conversion_rate IS NOT NULL), count(*) FILTER (WHERE average_score IS NOT NULL) "
            "FROM fact_journey_step"
        ).fetchone()
        dim = con.execute("SELECT campaign_id, status, scorecard_id FROM dim_predictive_campaign").fetchall()
        maps = con.execute("SELECT count(*) FROM dim_action_map").fetchone()
        predictive = con.execute(
            "SELECT count(*), count(model_version), count(precision) FROM fact_predictive_journey"
        ).fetchone()
    assert sequence == [(s.metric, n, s.exit_reason) for n, s in enumerate(FUNNEL_STEPS, start=1)]
    assert rates == (0, 0)
    listed = {m["id"]: m for m in sim.action_maps()}
    assert {row[0] for row in dim} == set(listed)
    assert {row[0]: row[1] for row in dim} == {
        map_id: ("active" if m["isActive"] else "paused") for map_id, m in listed.items()
    }
    assert {row[2] for row in dim} == {None}
    assert maps == (len(listed),)
    assert predictive == (sum(len(v) for v in steps.values()), 0, 0)


def test_one_day_on_the_snowflake_path(make_simulator, tmp_path):
    sim = _sim(make_simulator)
    with fakesnow_warehouse(tmp_path) as warehouse:
        result = _run(sim, tmp_path, DAY, DAY, warehouse=warehouse)
        assert result.success, failure_messages(result)
        steps = _read_steps(warehouse)
    assert steps == _truth(sim, [DAY])


def _read_steps(warehouse: WarehouseResource) -> dict[tuple[str, date], dict[str, int]]:
    rows = warehouse.read(TABLES["fact_journey_step"], PartitionWindow.inclusive(DAY, DAY))
    out: dict[tuple[str, date], dict[str, int]] = {}
    for row in rows.itertuples():
        out.setdefault((row.campaign_id, row.extraction_date.date()), {})[row.step_id] = int(row.contact_count)
    return out


def test_a_40_day_range_is_at_most_two_aggregate_queries(make_simulator, tmp_path):
    sim = _sim(make_simulator)
    first, last = date(2024, 2, 1), date(2024, 3, 11)  # 40 days: chunks of 31 and 9
    result = _run(sim, tmp_path, first, last)
    assert result.success, failure_messages(result)
    assert sim.count_requests(QUERY_PATH) == 2
    assert sim.count_requests(JOBS_PATH) == 0
    days = [first + timedelta(days=n) for n in range(40)]
    assert _steps(tmp_path / "warehouse.duckdb") == _truth(sim, days)
    # Each answer landed once; every day finds it through its pointer.
    zone = LandingZone(str(tmp_path / "landing"))
    assert len(zone.files(RAW_AGGREGATES)) == 2
    assert all(zone.latest_per_source(RAW_AGGREGATES, day) for day in days)
    assert len(zone.files(ACTION_MAP_LISTING)) == 1


@pytest.mark.parametrize("fault", [None, "failed_job", "expired_job"])
def test_a_range_too_big_for_sync_completes_through_async_jobs(make_simulator, tmp_path, fault):
    sim = _sim(make_simulator, journey_max_sync_cells=50)  # 12 maps x 10 days is too big: 413
    if fault:
        sim.inject_journey_fault(fault)
    first, last = date(2024, 3, 1), date(2024, 3, 10)
    result = _run(sim, tmp_path, first, last)
    assert result.success, failure_messages(result)
    assert sim.count_requests(QUERY_PATH) == 1  # the 413
    submitted = sim.count_requests(JOBS_PATH, method="POST")
    assert submitted == (2 if fault else 1)  # resubmitted once after FAILED or EXPIRED
    days = [first + timedelta(days=n) for n in range(10)]
    assert _steps(tmp_path / "warehouse.duckdb") == _truth(sim, days)


def test_a_missing_permission_fails_at_once_and_writes_nothing(make_simulator, tmp_path):
    client = ClientSpec("no-aggregates", "s3cr3t-no-aggregates", permissions=("journey:actionmap:view",))
    sim = _sim(make_simulator, clients=[client])
    resources = pipeline_resources(sim, tmp_path, now=NOW)
    api = resources["pe_api"]
    resources["pe_api"] = type(api)(
        **{
            **api.model_dump(),
            "oauth_clients": [{"client_id": client.client_id, "client_secret": client.client_secret}],
        }
    )
    result = run_days(resources, DAY, DAY, settings=SETTINGS)
    assert not result.success
    assert step_retries(result) == 0  # no Dagster retry of a permission error
    messages = "\n".join(failure_messages(result))
    assert AGGREGATE_PERMISSION in messages
    assert sim.count_requests(QUERY_PATH) == 1  # refused once, never retried
    zone = LandingZone(str(tmp_path / "landing"))
    assert zone.files(RAW_AGGREGATES, DAY) == []
    assert not (tmp_path / "warehouse.duckdb").exists() or not _has_table(tmp_path, "fact_journey_step")


def _has_table(tmp_path: Path, table: str) -> bool:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return bool(
            con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()[0]
        )


def test_a_binding_rate_limit_sees_no_429(make_simulator, tmp_path):
    # The simulator allows exactly the client's cap per 1 s window; 250 maps make several listing and
    # result pages (100 groups a page), and the async path adds the job's own requests.
    sim = _sim(
        make_simulator, client_limit=3, org_limit=100, window_seconds=1.0, journey_max_sync_cells=50, n_action_maps=250
    )
    first, last = date(2024, 3, 1), date(2024, 3, 5)
    resources = pipeline_resources(sim, tmp_path, now=NOW, requests_per_minute=3)
    api = resources["pe_api"]
    resources["pe_api"] = type(api)(
        **{**api.model_dump(), "oauth_clients": api.oauth_clients, "rate_window_seconds": 1.0}
    )
    result = run_days(resources, first, last, settings=SETTINGS)
    assert result.success, failure_messages(result)
    records = [r for r in sim.log_records() if "/api/v2/" in r["path"]]
    assert len(records) > 2 * 3  # the cap bound: more requests than two windows hold
    assert [r for r in records if r["status"] == 429] == []
    days = [first + timedelta(days=n) for n in range(5)]
    assert _steps(tmp_path / "warehouse.duckdb") == _truth(sim, days)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("non_numeric_count", "stats.count"),
        ("bucket_outside_interval", "outside"),
        ("group_without_map_id", "journeyActionMapId"),
    ],
)
def test_a_malformed_answer_fails_the_step_and_writes_nothing(make_simulator, tmp_path, fault, message):
    sim = _sim(make_simulator)
    sim.inject_journey_fault(fault)
    result = _run(sim, tmp_path, DAY, DAY)
    assert not result.success
    assert step_retries(result) == 0
    assert message in "\n".join(failure_messages(result))
    assert LandingZone(str(tmp_path / "landing")).files(RAW_AGGREGATES, DAY) == []
    assert not (tmp_path / "warehouse.duckdb").exists() or not _has_table(tmp_path, "fact_journey_step")


def test_a_repeating_result_cursor_fails_and_writes_nothing(make_simulator, tmp_path):
    sim = _sim(make_simulator, journey_max_sync_cells=5)
    sim.inject_journey_fault("repeating_cursor", count=2)  # page 2 hands back the cursor it was asked with
    result = _run(sim, tmp_path, DAY, date(2024, 3, 7))
    assert not result.success
    assert "cursor" in "\n".join(failure_messages(result))
    assert LandingZone(str(tmp_path / "landing")).files(RAW_AGGREGATES) == []


def test_unknown_metrics_and_fields_land_and_warn(make_simulator, tmp_path):
    sim = _sim(make_simulator)
    sim.inject_journey_fault("unknown_metric")
    sim.inject_journey_fault("unknown_field")
    result = _run(sim, tmp_path, DAY, DAY)
    assert result.success, failure_messages(result)
    drift = [e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == "no_unknown_aggregate_fields"]
    assert [(e.passed, e.severity) for e in drift] == [(False, dg.AssetCheckSeverity.WARN)]
    [landed] = LandingZone(str(tmp_path / "landing")).files(RAW_AGGREGATES)
    assert landed.envelope["responses"]  # kept as served
    assert _steps(tmp_path / "warehouse.duckdb") == _truth(sim, [DAY])


def test_rates_above_one_are_kept_and_warned(make_simulator, tmp_path):
    sim = _sim(make_simulator)
    first, last = date(2024, 1, 1), date(2024, 3, 31)  # ~3% of map-days pass 1 in the simulator's world
    result = _run(sim, tmp_path, first, last)
    assert result.success, failure_messages(result)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        above, undefined = con.execute(
            "SELECT count(*) FILTER (WHERE conversion_rate > 1), "
            "count(*) FILTER (WHERE conversion_rate IS NULL) FROM fact_journey_step"
        ).fetchone()
    [check] = [
        e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == "conversion_rate_at_most_one"
    ]
    assert above > 0 and not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["rows_above_one"].value == above
    assert undefined > 0  # qualified 0: rates undefined, kept as NULL


def test_contiguous_ranges():
    d = date(2024, 3, 1)
    days = [d, d + timedelta(days=1), d + timedelta(days=3)]
    assert contiguous_ranges(days) == [(d, d + timedelta(days=2)), (d + timedelta(days=3), d + timedelta(days=4))]
    assert contiguous_ranges([]) == []
