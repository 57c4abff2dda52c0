"""``scorecard_drift`` and every check end to end: the graph against the simulator, into DuckDB."""

from __future__ import annotations

import statistics
import warnings
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import pytest

from pe_assets.drift import calibration_gap, population_stability_index
from pe_assets.rules import range_tags
from pe_dev.pipeline import pipeline_resources, project_defs

warnings.filterwarnings("ignore", category=dg.SupersessionWarning)

FIRST, LAST = date(2024, 3, 1), date(2024, 3, 10)
DAYS = [FIRST + timedelta(days=n) for n in range((LAST - FIRST).days + 1)]
NOW = datetime(2024, 3, 25, 12, tzinfo=UTC)  # long after every day: all outcomes are final

PARTITIONED_CHECKS = [
    ("fact_journey_step", "campaign_in_dim"),
    ("fact_predictive_journey", "campaign_in_dim"),
    ("fact_scorecard_performance", "scorecard_snapshot_for_day"),
    ("scorecard_drift", "score_distribution_stable"),
    ("scorecard_drift", "calibration_within_tolerance"),
    ("scorecard_drift", "precision_recall_stable"),
]


def run_days_with_monitoring(
    resources: dict[str, object], first: date, last: date, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """The code location's ``pe_daily_job`` (every asset and check) as one ranged run."""
    return (
        project_defs(resources)
        .resolve_job_def("pe_daily_job")
        .execute_in_process(instance=instance, tags=range_tags(first, last), raise_on_error=False)
    )


@pytest.fixture
def sim(make_simulator):
    # A small world (few campaigns, short funnels): this test is about the scorecards.
    server = make_simulator(seed=11, client_limit=100_000, org_limit=100_000, n_campaigns=6, big_campaign_steps=40)
    server.set_now(NOW)
    return server


def test_scorecard_drift_end_to_end(sim, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = run_days_with_monitoring(pipeline_resources(sim, tmp_path, now=NOW), FIRST, LAST, instance)
    assert result.success

    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT scorecard_id, extraction_date, model_version, calibration_gap, psi, precision_delta, "
            "recall_delta, baseline_days FROM scorecard_drift ORDER BY scorecard_id, extraction_date"
        ).fetchall()
    scorecards = sorted({c["scorecardId"] for c in sim.campaigns() if c["status"] != "archived" and c["scorecardId"]})
    assert len(scorecards) >= 2
    assert [(r[0], r[1]) for r in rows] == [(s, d) for s in scorecards for d in DAYS]

    truth = {(s, d): sim.expected_scorecard(s, d) for s in scorecards for d in DAYS}
    for scorecard_id, day, version, gap, psi, precision_delta, recall_delta, baseline_days in rows:
        today = truth[(scorecard_id, day)]
        metrics = today["performanceMetrics"]
        baseline = [truth[(scorecard_id, d)] for d in DAYS if d < day]  # the run starts at FIRST: < 28 days
        assert baseline_days == len(baseline)
        assert version == today["modelVersion"]
        assert gap == pytest.approx(
            calibration_gap(metrics["predictedConversionRate"], metrics["actualConversionRate"]), abs=1e-12
        )
        if not baseline:
            assert psi is None and precision_delta is None and recall_delta is None
            continue
        pooled: dict[str, int] = {}
        for snapshot in baseline:
            for bucket, count in snapshot["scoreDistribution"].items():
                pooled[bucket] = pooled.get(bucket, 0) + count
        assert psi == pytest.approx(population_stability_index(today["scoreDistribution"], pooled), abs=1e-12)
        median_precision = statistics.median(s["performanceMetrics"]["precision"] for s in baseline)
        median_recall = statistics.median(s["performanceMetrics"]["recall"] for s in baseline)
        assert precision_delta == pytest.approx(metrics["precision"] - median_precision, abs=1e-12)
        assert recall_delta == pytest.approx(metrics["recall"] - median_recall, abs=1e-12)

    # Every partitioned check has one result per day in the instance; cross-table checks pass.
    for asset, name in PARTITIONED_CHECKS:
        key = dg.AssetCheckKey(dg.AssetKey(asset), name)
        info = instance.event_log_storage.get_asset_check_partition_info([key])
        assert sorted(i.partition_key for i in info) == [d.isoformat() for d in DAYS], key
        if asset != "scorecard_drift":
            assert {i.latest_execution_status.value for i in info} == {"SUCCEEDED"}, key
    # The drift WARNs agree with the rows (judged only with 7+ baseline days for PSI and deltas).
    evaluations = {
        (e.check_name, e.partition): e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.path == ["scorecard_drift"]
    }
    for day in DAYS:
        today = [r for r in rows if r[1] == day]
        stable = not any(r[4] is not None and r[7] >= 7 and r[4] > 0.2 for r in today)
        calibrated = not any(r[3] > 0.05 for r in today)
        evaluation = evaluations[("score_distribution_stable", day.isoformat())]
        assert evaluation.passed == stable and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert evaluations[("calibration_within_tolerance", day.isoformat())].passed == calibrated
        judged = evaluation.metadata["scorecards_judged"].value
        assert judged == (len(today) if (day - FIRST).days >= 7 else 0)
