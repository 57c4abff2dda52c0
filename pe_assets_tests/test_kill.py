"""SIGKILL a materialization at seeded points, then check nothing half-done is visible and a re-run converges.

The run is a real subprocess (``python -m pe_dev.chaos materialize``) against a
simulator in this process (20 ms latency per request widens the extraction window). Day 1 was
loaded before (the "old" partition); the killed run re-materializes days 1-2. After the kill:

* every warehouse table holds, per day, exactly the old rows or exactly the new ones (never a
  subset): day 1 equals the truth (old == new there), day 2 is empty or equals the truth;
* the landing zone reads back without error (``LandingZone.files`` never raises) and every envelope
  is whole (a journey envelope holds every step of its day); a hidden ``.tmp`` is ignored;
* a re-run converges: every table equals a clean run (the scorecard history compared as a set).

Kill points: during extraction (after the k-th journey file landed, k seeded), during landing
writes (a seeded delay after the first file), inside a warehouse transaction (after the DELETE of
the m-th table write, before its INSERT: the child pauses there), and at a seeded instant anywhere.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from pe_assets.landing import LandingZone
from pe_dev.chaos import (
    FIRST_DAY,
    REPO_ROOT,
    SNAPSHOT_TABLES,
    compare,
    materialize,
    resources_for,
    snapshot,
    spawn_materialize,
    start_simulator,
    wait_for,
)
from pe_dev.simulator import SimulatorServer

SEED = 61
DAY1, DAY2 = FIRST_DAY, FIRST_DAY + timedelta(days=1)
DATE_INDEX = {  # position of extraction_date in each table's compared row (snapshot() drops volatile columns)
    "fact_journey_step": 1,
    "rejected_journey_step": 1,
    "fact_scorecard_performance": 1,
    "fact_scorecard_score_distribution": 1,
    "fact_predictive_journey": 2,
    "scorecard_drift": 1,
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    server = start_simulator(seed=SEED, latency=0.02)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def baseline(sim: SimulatorServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """(truth of days 1-2, a data dir holding day 1 only), both from clean in-process runs."""
    truth_dir = tmp_path_factory.mktemp("truth")
    assert materialize(resources_for(sim, truth_dir), DAY1, DAY2).success
    old_dir = tmp_path_factory.mktemp("old")
    assert materialize(resources_for(sim, old_dir), DAY1, DAY1).success
    return snapshot(truth_dir / "warehouse.duckdb"), old_dir


def _by_day(rows: list[tuple], table: str) -> dict[object, list[tuple]]:
    out: dict[object, list[tuple]] = {}
    for row in rows:
        key = row[DATE_INDEX[table]].date() if hasattr(row[DATE_INDEX[table]], "date") else row[DATE_INDEX[table]]
        out.setdefault(key, []).append(row)
    return out


def _journey_files(data_dir: Path) -> int:
    return len(list((data_dir / "landing" / "raw_campaign_journeys").glob("day=*/*.json")))


def _assert_landing_whole(data_dir: Path, sim: SimulatorServer) -> int:
    zone = LandingZone(str(data_dir / "landing"))
    n = len(zone.files("campaign_listing"))
    for day in (DAY1, DAY2):
        for landed in zone.files("raw_campaign_journeys", day):
            steps = [s for page in landed.envelope["pages"] for s in page["steps"]]
            assert len(steps) == len(sim.expected_steps(landed.source_id, day)), landed.path
            n += 1
        for landed in zone.files("raw_scorecards", day):
            assert landed.envelope["response"]["scorecardId"] == landed.source_id
            n += 1
    return n


def _assert_old_or_new(data_dir: Path, truth: dict) -> None:
    got = snapshot(data_dir / "warehouse.duckdb")
    for table, rows in got.items():
        if table not in DATE_INDEX:
            # dim_predictive_campaign: replaced whole, so it is the old table or the new one.
            assert sorted(rows, key=repr) == sorted(truth[table], key=repr), table
            continue
        want, have = _by_day(truth[table], table), _by_day(rows, table)
        for day in (DAY1, DAY2):
            day_rows = have.get(day, [])
            if table in SNAPSHOT_TABLES:
                assert set(day_rows) <= set(want.get(day, [])), (table, day)
                assert day != DAY1 or set(day_rows) == set(want[day]), (table, day)
                continue
            if day == DAY1:
                assert sorted(day_rows, key=repr) == sorted(want[day], key=repr), f"{table} {day}: old rows damaged"
            else:
                assert day_rows == [] or sorted(day_rows, key=repr) == sorted(want[day], key=repr), (
                    f"{table} {day}: a partial partition ({len(day_rows)} of {len(want[day])} rows)"
                )


KILL_POINTS = [
    pytest.param("extraction", 1, id="extraction-seed1"),
    pytest.param("landing", 2, id="landing-seed2"),
    pytest.param("warehouse", 3, id="warehouse-seed3"),
    pytest.param("anywhere", 5, id="anywhere-seed5"),
]


@pytest.mark.parametrize(("phase", "seed"), KILL_POINTS)
def test_sigkill_leaves_old_or_new_and_a_rerun_converges(phase, seed, sim, baseline, tmp_path):
    truth, old_dir = baseline
    rng = random.Random(f"kill:{phase}:{seed}")
    data_dir = tmp_path / "data"
    shutil.copytree(old_dir, data_dir)
    markers = tmp_path / "markers"
    pause = 0.6 if phase == "warehouse" else 0.0
    proc = spawn_materialize(
        sim, data_dir, DAY1, DAY2, pause_before_insert=pause, marker_dir=markers, log_path=tmp_path / "child.log"
    )
    try:
        already = _journey_files(data_dir)
        if phase == "extraction":
            k = rng.randint(1, 6)
            assert wait_for(lambda: _journey_files(data_dir) >= already + k, 60), "extraction never started"
        elif phase == "landing":
            assert wait_for(lambda: _journey_files(data_dir) > already, 60), "nothing landed"
            time.sleep(rng.uniform(0.0, 0.05))
        elif phase == "warehouse":
            m = rng.randint(1, 6)
            assert wait_for(lambda: len(list(markers.glob("insert-*"))) >= m, 90), "no warehouse write"
            time.sleep(rng.uniform(0.05, 0.3))  # inside the pause: DELETE done, INSERT not yet
        else:
            assert wait_for(lambda: _journey_files(data_dir) > already, 60)
            time.sleep(rng.uniform(0.0, 3.0))
        assert proc.poll() is None, f"the run ended before the kill point:\n{(tmp_path / 'child.log').read_text()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert _assert_landing_whole(data_dir, sim) > 0
    _assert_old_or_new(data_dir, truth)

    # A stray temporary file (what a write killed before its rename leaves) is never read.
    stray = data_dir / "landing" / "raw_campaign_journeys" / f"day={DAY2}"
    stray.mkdir(parents=True, exist_ok=True)
    big = sim.roles["big"]
    (stray / f".{big}~20240306T000000000000Z-deadbeef.json.tmp").write_bytes(b'{"envelope_version": 1, "pag')

    rerun = materialize(resources_for(sim, data_dir), DAY1, DAY2)
    assert rerun.success
    diff = compare(truth, snapshot(data_dir / "warehouse.duckdb"), distinct_tables=SNAPSHOT_TABLES)
    assert diff.equal, diff.by_table
    _assert_landing_whole(data_dir, sim)


_WRITER = """
import sys
from datetime import UTC, datetime, date
from pe_assets.landing import LandingZone
zone = LandingZone(sys.argv[1])
steps = [{"stepId": f"s{i}", "contactCount": i, "conversionRate": 0.5, "stepName": "x" * 200} for i in range(20000)]
print("ready", flush=True)
while True:
    zone.write("raw_campaign_journeys", "camp-1", datetime.now(UTC), {"pages": [{"steps": steps}]}, date(2024, 3, 6))
"""


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_during_a_landing_write_never_leaves_a_readable_partial_file(seed, tmp_path):
    """A process writing large envelopes in a loop is killed at a seeded instant: whatever it left
    (complete files, a hidden .tmp), ``LandingZone.files`` reads without error and returns only
    whole envelopes."""
    rng = random.Random(f"landing-kill:{seed}")
    root = tmp_path / "landing"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        folder = root / "raw_campaign_journeys" / "day=2024-03-06"
        assert wait_for(lambda: folder.exists() and any(folder.glob("camp-1~*.json")), 30)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    landed = LandingZone(str(root)).files("raw_campaign_journeys", DAY2)
    for f in landed:
        assert len(f.envelope["pages"][0]["steps"]) == 20000
        json.loads(Path(f.path).read_bytes())  # the file itself is whole JSON
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert all(name.startswith(".") for name in leftovers)
