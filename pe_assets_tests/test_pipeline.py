"""The whole graph against the simulator over loopback HTTP, into DuckDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from pe_assets.warehouse import DuckDBWarehouse, WarehouseResource
from pe_dev.fakesnow import fakesnow_warehouse
from pe_dev.pipeline import materializations, pipeline_resources, run_days

DAY1, DAY2 = date(2024, 3, 5), date(2024, 3, 6)
NOW = datetime(2024, 3, 20, 12, tzinfo=UTC)  # long after both days: outcomes are final


def _rows(wh: WarehouseResource, sql: str, params: list[object] | None = None) -> list[tuple]:
    """Query rows as plain tuples, NULLs as None, through the warehouse under test."""
    frame = wh.query(sql, params).astype(object)
    frame = frame.where(frame.notna(), None)
    return [tuple(row) for row in frame.itertuples(index=False)]


@pytest.fixture(params=["duckdb", "snowflake"])
def wh(request, tmp_path) -> Iterator[WarehouseResource]:
    """Every end-to-end test runs on the embedded DuckDB and on the Snowflake path (fakesnow)."""
    if request.param == "duckdb":
        yield DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    else:
        with fakesnow_warehouse(tmp_path) as snowflake:
            yield snowflake


@pytest.fixture
def sim(make_simulator):
    # Server limits far above the client's cap: these tests are about data, not throttling.
    server = make_simulator(seed=7, client_limit=100_000, org_limit=100_000)
    server.set_now(NOW)
    return server


def test_two_partitions_load_every_active_and_paused_campaign_exactly(sim, tmp_path, wh):
    resources = pipeline_resources(sim, tmp_path, now=NOW, warehouse=wh)
    result = run_days(resources, DAY1, DAY2)
    assert result.success
    roles = sim.roles
    expected_campaigns = {c["id"] for c in sim.campaigns() if c["status"] in ("active", "paused")}
    assert roles["archived"] not in expected_campaigns and roles["paused"] in expected_campaigns

    for day in (DAY1, DAY2):
        loaded = _rows(
            wh,
            "SELECT campaign_id, step_id, step_sequence, contact_count, conversion_rate, average_score, "
            "exit_reason, step_name FROM fact_predictive_journey WHERE extraction_date = CAST(? AS DATE) "
            "ORDER BY campaign_id, step_sequence",
            [day.isoformat()],
        )
        assert {row[0] for row in loaded} == expected_campaigns
        for campaign_id in expected_campaigns:
            truth = [
                (
                    campaign_id,
                    s["stepId"],
                    position,
                    s["contactCount"],
                    s["conversionRate"],
                    s.get("averageScore"),
                    s.get("exitReason"),
                    s.get("stepName"),
                )
                for position, s in enumerate(sim.expected_steps(campaign_id, day), start=1)
                if s.get("stepId") and s.get("contactCount") is not None
            ]
            assert [r for r in loaded if r[0] == campaign_id] == truth

    # The 1000+ step campaign: one row per step, positions 1..N with no gap or duplicate.
    big = roles["big"]
    n_steps = len(sim.expected_steps(big, DAY1))
    assert n_steps > 1000
    assert _rows(
        wh,
        "SELECT count(*), count(DISTINCT step_id), count(DISTINCT step_sequence), min(step_sequence), "
        "max(step_sequence) FROM fact_predictive_journey WHERE campaign_id = ? AND extraction_date = CAST(? AS DATE)",
        [big, DAY1.isoformat()],
    ) == [(n_steps, n_steps, n_steps, 1, n_steps)]

    # Nulls stay NULL, never ''.
    assert _rows(wh, "SELECT count(*) FROM fact_journey_step WHERE exit_reason = '' OR step_name = ''") == [(0,)]
    assert _rows(wh, "SELECT count(*) FROM fact_journey_step WHERE exit_reason IS NULL")[0][0] > 0
    # Damaged steps are quarantined with their reason, not loaded.
    rejected = _rows(
        wh, "SELECT campaign_id, reason FROM rejected_journey_step ORDER BY extraction_date, step_sequence"
    )
    assert rejected and {r[0] for r in rejected} == {roles["damaged"]}
    assert {r[1] for r in rejected} == {"missing stepId", "missing contactCount"}
    # Column types as the contract promises (DOUBLE and VARCHAR are DuckDB's names; FLOAT and
    # TEXT are Snowflake's).
    types = {
        name.lower(): data_type.upper()
        for name, data_type in _rows(
            wh,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE lower(table_name) = 'fact_predictive_journey'",
        )
    }
    assert types["extraction_date"] == "DATE"
    assert types["conversion_rate"] in ("DOUBLE", "FLOAT") and types["precision"] == types["conversion_rate"]
    assert types["model_version"] in ("VARCHAR", "TEXT")
    # Scorecard metrics keep the API's precision.
    sc_id = next(c["scorecardId"] for c in sim.campaigns() if c["id"] == big)
    truth = sim.expected_scorecard(sc_id, DAY1)["performanceMetrics"]
    assert _rows(
        wh,
        "SELECT DISTINCT precision, recall, f1_score, actual_conversion_rate FROM fact_predictive_journey "
        "WHERE campaign_id = ? AND extraction_date = CAST(? AS DATE)",
        [big, DAY1.isoformat()],
    ) == [(truth["precision"], truth["recall"], truth["f1Score"], truth["actualConversionRate"])]
    # dim: every campaign, archived included.
    assert {r[0] for r in _rows(wh, "SELECT campaign_id FROM dim_predictive_campaign")} == {
        c["id"] for c in sim.campaigns()
    }


def test_rerunning_a_partition_leaves_the_same_rows(sim, tmp_path, wh):
    resources = pipeline_resources(sim, tmp_path, now=NOW, warehouse=wh)
    columns = "campaign_id, extraction_date, step_id, step_sequence, contact_count, conversion_rate, exit_reason"
    assert run_days(resources, DAY1, DAY2).success
    first = _rows(
        wh, f"SELECT {columns} FROM fact_predictive_journey ORDER BY campaign_id, extraction_date, step_sequence"
    )
    assert run_days(resources, DAY1, DAY1).success
    assert run_days(resources, DAY1, DAY1).success
    again = _rows(
        wh, f"SELECT {columns} FROM fact_predictive_journey ORDER BY campaign_id, extraction_date, step_sequence"
    )
    assert again == first
    assert _rows(
        wh,
        "SELECT count(*) FROM (SELECT campaign_id, extraction_date, step_id FROM fact_journey_step "
        "GROUP BY campaign_id, extraction_date, step_id HAVING count(*) > 1)",
    ) == [(0,)]


def test_campaign_archived_later_keeps_its_rows(sim, tmp_path, wh):
    resources = pipeline_resources(sim, tmp_path, now=NOW, warehouse=wh)
    assert run_days(resources, DAY1, DAY1).success
    victim = sim.roles["unscored"]
    before = _rows(wh, "SELECT count(*) FROM fact_journey_step WHERE campaign_id = ?", [victim])[0][0]
    assert before > 0
    sim.archive_campaign(victim)
    result = run_days(resources, DAY1, DAY1)
    assert result.success
    assert _rows(wh, "SELECT count(*) FROM fact_journey_step WHERE campaign_id = ?", [victim])[0][0] == before
    assert _rows(wh, "SELECT status FROM dim_predictive_campaign WHERE campaign_id = ?", [victim]) == [("archived",)]


def test_campaign_archived_mid_pagination_lands_nothing_partial(sim, tmp_path, wh):
    resources = pipeline_resources(sim, tmp_path, now=NOW, warehouse=wh)
    big = sim.roles["big"]
    sim.archive_campaign(big, after_pages=1)  # the second page of its day answers 404
    result = run_days(resources, DAY1, DAY1)
    assert result.success
    [raw] = [m.metadata for m in materializations(result, "raw_campaign_journeys")]
    assert raw["campaign_days_archived_during_run"].value == 1
    assert _rows(wh, "SELECT count(*) FROM fact_journey_step WHERE campaign_id = ?", [big]) == [(0,)]
    assert not list((tmp_path / "landing" / "raw_campaign_journeys" / f"day={DAY1}").glob(f"{big}~*.json"))


def test_early_extraction_is_pending_backfill_and_a_later_one_is_final(sim, tmp_path, wh):
    day = DAY1
    early = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=3)
    sim.set_now(early)
    assert run_days(pipeline_resources(sim, tmp_path, now=early, warehouse=wh), day, day).success
    late = early + timedelta(days=3)
    sim.set_now(late)
    assert run_days(pipeline_resources(sim, tmp_path, now=late, warehouse=wh), day, day).success
    history = _rows(
        wh,
        "SELECT scorecard_id, pending_backfill, actual_conversion_rate FROM fact_scorecard_performance "
        "ORDER BY scorecard_id, extracted_at",
    )
    by_scorecard: dict[str, list[tuple]] = {}
    for scorecard_id, pending, actual in history:
        by_scorecard.setdefault(scorecard_id, []).append((pending, actual))
    assert by_scorecard and all(len(snapshots) == 2 for snapshots in by_scorecard.values())
    for scorecard_id, [(pending_1, _), (pending_2, actual_2)] in by_scorecard.items():
        assert (pending_1, pending_2) == (True, False)
        assert actual_2 == sim.expected_scorecard(scorecard_id, day)["performanceMetrics"]["actualConversionRate"]
    # The journey fact follows the latest (final) snapshot.
    assert _rows(
        wh, "SELECT DISTINCT pending_backfill FROM fact_predictive_journey WHERE scorecard_id IS NOT NULL"
    ) == [(False,)]


def test_retraining_adds_a_snapshot_and_keeps_the_old_one(sim, tmp_path, wh):
    resources = pipeline_resources(sim, tmp_path, now=NOW, warehouse=wh)
    assert run_days(resources, DAY1, DAY1).success
    scorecard_id = next(c["scorecardId"] for c in sim.campaigns() if c["id"] == sim.roles["big"])
    old = _rows(
        wh, "SELECT model_version, precision FROM fact_scorecard_performance WHERE scorecard_id = ?", [scorecard_id]
    )
    sim.retrain_scorecard(scorecard_id)
    assert run_days(resources, DAY1, DAY1, selection="raw_scorecards*").success
    history = _rows(
        wh,
        "SELECT model_version, precision FROM fact_scorecard_performance WHERE scorecard_id = ? ORDER BY extracted_at",
        [scorecard_id],
    )
    assert len(history) == 2 and history[0] == old[0]
    assert history[1][0] != history[0][0]
    assert _rows(
        wh, "SELECT DISTINCT model_version FROM fact_predictive_journey WHERE scorecard_id = ?", [scorecard_id]
    ) == [(history[1][0],)]


def test_a_range_of_30_days_materializes_in_one_run(sim, tmp_path, wh):
    resources = pipeline_resources(sim, tmp_path, now=NOW, warehouse=wh)
    first = date(2024, 2, 1)
    result = run_days(resources, first, first + timedelta(days=29))
    assert result.success
    assert _rows(wh, "SELECT count(DISTINCT extraction_date) FROM fact_predictive_journey") == [(30,)]
    raw_runs = materializations(result, "raw_campaign_journeys")
    assert len(raw_runs) >= 1 and raw_runs[0].metadata["days"].value == 30
