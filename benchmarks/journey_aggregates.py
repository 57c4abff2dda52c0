"""The real Genesys source (PE_SOURCE=journey-aggregates): requests and time per backfill size.

Prints figures; never a test. Run:  .venv/bin/python benchmarks/journey_aggregates.py

For 40 and 400 action maps, materializes the whole graph (``pe_daily_job``: extraction, landing,
fact_journey_step, fact_predictive_journey, the dims and the funnel views, every check) into a
fresh DuckDB file against the in-process simulator, as one ranged run each: 1 day, a 40-day range
and a 365-day backfill. The simulator keeps Genesys' assumed limits (31 days per sync query,
10,000 groups x buckets, then 413 and the async job family; jobs take 0.2 s here instead of the
simulator's default 2 s). No binding budget (the client allows 10,000 requests/min): this measures
how few requests the source needs and what the rest of the run costs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from pe_dev.pipeline import pipeline_resources, run_days, settings_for_tests
from pe_dev.simulator import SimulatorConfig, SimulatorServer

LAST_DAY = date(2025, 12, 31)
NOW = datetime(2026, 1, 2, 12, tzinfo=UTC)
RANGES = {"1 day": 1, "40 days": 40, "365 days": 365}


def measure(action_maps: int, days: int) -> dict[str, object]:
    config = SimulatorConfig(
        seed=7, n_action_maps=action_maps, client_limit=100_000, org_limit=100_000, journey_job_delay=0.2
    )
    with SimulatorServer(config, host="127.0.0.1", port=0) as sim, tempfile.TemporaryDirectory() as tmp:
        sim.set_now(NOW, frozen=False)
        first = LAST_DAY - timedelta(days=days - 1)
        resources = pipeline_resources(sim, Path(tmp), now=NOW, requests_per_minute=10_000)
        settings = settings_for_tests(PE_SOURCE="journey-aggregates")
        started = time.perf_counter()
        result = run_days(resources, first, LAST_DAY, settings=settings)
        seconds = time.perf_counter() - started
        with duckdb.connect(str(Path(tmp) / "warehouse.duckdb"), read_only=True) as con:
            rows = con.execute("SELECT count(*) FROM fact_journey_step").fetchone()[0]
        return {
            "success": result.success,
            "requests": sim.count_requests("/api/v2/"),
            "queries": sim.count_requests("/aggregates/query"),
            "jobs": sim.count_requests("/aggregates/jobs", method="POST"),
            "listing": sim.count_requests("/journey/actionmaps"),
            "seconds": seconds,
            "rows": rows,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, nargs="+", default=[40, 400])
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    print("| action maps | range | requests (queries / async jobs / listing pages) | fact_journey_step rows | wall |")
    print("|---|---|---|---|---|")
    for maps in args.maps:
        for label, days in RANGES.items():
            m = measure(maps, days)
            status = "" if m["success"] else " FAILED"
            print(
                f"| {maps} | {label} | {m['requests']} ({m['queries']} / {m['jobs']} / {m['listing']}) "
                f"| {m['rows']:,} | {m['seconds']:.1f} s{status} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
