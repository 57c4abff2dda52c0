"""Chaos convergence: faults on the wire never change what the warehouse ends up holding.

Each test materializes the same small world twice, fault-free and with faults, and compares every
warehouse table row for row (load/extraction timestamps left out): no row lost, none extra, no
duplicate. Step failures that outlive the client's retries are retried by the API assets'
``RetryPolicy`` (same ``max_retries``, delay shortened to 0.2 s by ``chaos.materialize``:
a job's ``op_retry_policy`` would not override an asset's own policy). A run that still fails is
run again, as an operator (or a run-retry policy) would.

The benchmark version (20 seeds, figures) is ``benchmarks/chaos.py``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pe_dev.chaos import (
    FIRST_DAY,
    chaos_run,
    compare,
    materialize,
    resources_for,
    snapshot,
    start_simulator,
    step_retries,
)


def _truth(tmp_path: Path, seed: int, days: int = 1) -> dict:
    sim = start_simulator(seed=seed)
    try:
        result = materialize(resources_for(sim, tmp_path / "truth"), FIRST_DAY, FIRST_DAY + timedelta(days=days - 1))
        assert result.success
    finally:
        sim.stop()
    return snapshot(tmp_path / "truth" / "warehouse.duckdb")


@pytest.mark.parametrize("seed", [101, 202, 303])
def test_random_faults_of_every_kind_converge_to_the_fault_free_tables(seed, tmp_path):
    """25% of API requests fail (5xx, dropped connection, answer slower than the timeout, 429, token
    revoked); after retries every table equals the fault-free run's, row for row."""
    outcome = chaos_run(seed, 0.25, tmp_path, days=2, timeout_seconds=0.4, slow_seconds=0.8)
    assert sum(outcome.faults_injected.values()) > 0, "the experiment injected no fault"
    assert outcome.comparison.rows_compared > 4000
    assert outcome.comparison.lost == 0, outcome.comparison.by_table
    assert outcome.comparison.equal, outcome.comparison.by_table
    assert outcome.converged


def test_a_step_failing_past_the_client_retries_is_retried_by_dagster_and_converges(tmp_path):
    """A token revoked twice in a row on one journey page (401, renewal, 401 again) is fatal to the
    client: the step fails, the asset's RetryPolicy re-runs it in the same run, and the tables equal
    the truth. (Revocations, not 503s: they fail at once, without the client's backoff.)"""
    truth = _truth(tmp_path, seed=41)
    sim = start_simulator(seed=41)
    try:
        sim.inject_fault("revoke", count=2, path_contains=f"/campaigns/{sim.roles['big']}/analytics")
        result = materialize(resources_for(sim, tmp_path / "chaos"), FIRST_DAY, FIRST_DAY)
    finally:
        sim.stop()
    assert result.success
    assert step_retries(result) == 1
    diff = compare(truth, snapshot(tmp_path / "chaos" / "warehouse.duckdb"))
    assert diff.equal, diff.by_table


def test_a_failed_run_rerun_converges(tmp_path):
    """Faults outlasting the client *and* every Dagster retry fail the run, loading nothing partial;
    running it again converges to the truth."""
    truth = _truth(tmp_path, seed=42)
    sim = start_simulator(seed=42)
    try:
        # Two revocations fail one step attempt; 1 + 3 Dagster retries = 4 attempts.
        sim.inject_fault("revoke", count=8, path_contains=f"/campaigns/{sim.roles['big']}/analytics")
        resources = resources_for(sim, tmp_path / "chaos")
        failed = materialize(resources, FIRST_DAY, FIRST_DAY)
        assert not failed.success and step_retries(failed) == 3
        partial = snapshot(tmp_path / "chaos" / "warehouse.duckdb")
        assert all(not rows for rows in partial.values()), "a failed extraction loaded rows"
        again = materialize(resources, FIRST_DAY, FIRST_DAY)
        assert again.success
    finally:
        sim.stop()
    diff = compare(truth, snapshot(tmp_path / "chaos" / "warehouse.duckdb"))
    assert diff.equal, diff.by_table


def test_a_dagster_retry_of_raw_scorecards_adds_no_duplicate_snapshot(tmp_path):
    """Five 503s on one scorecard's analytics exhaust the client's attempts (~4 s of backoff, long
    after the other scorecards landed) and fail the step; the retry must not land the others a
    second time (each landed file records its run, and a retry skips what its run landed)."""
    truth = _truth(tmp_path, seed=43)
    sim = start_simulator(seed=43)
    try:
        scorecard = sorted({c["scorecardId"] for c in sim.campaigns() if c["scorecardId"]})[0]
        sim.inject_fault("5xx", count=5, path_contains=f"/scorecards/{scorecard}/analytics")
        result = materialize(resources_for(sim, tmp_path / "chaos"), FIRST_DAY, FIRST_DAY)
    finally:
        sim.stop()
    assert result.success and step_retries(result) == 1
    diff = compare(truth, snapshot(tmp_path / "chaos" / "warehouse.duckdb"))
    assert diff.lost == 0
    assert diff.equal, diff.by_table
