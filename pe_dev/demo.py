"""The main job on the embedded defaults: simulator on loopback -> landing folder -> DuckDB.

``python -m pe_dev.demo [--days N]`` starts the API simulator on a free loopback port, points
pe_assets at it, materializes the last N complete UTC days (default 7) as one ranged run of
``pe_daily_job`` in a persistent Dagster instance, and prints what was loaded, where the DuckDB
file is and a command that queries it. Settings already in the environment win, so the same
command can run against a real org.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pe_dev.simulator import SimulatorConfig, SimulatorServer

# The demo's own rate settings: the simulator allows more than the client's cap, so the run is
# quick and never sees a 429. Set PE_REQUESTS_PER_MINUTE yourself to watch the budget at work.
DEMO_REQUESTS_PER_MINUTE = "600"
DEMO_SIMULATOR_LIMIT = 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7, help="complete UTC days to load, ending yesterday")
    parser.add_argument("--data-dir", default=os.environ.get("PE_DATA_DIR", ".pe_data"))
    parser.add_argument("--seed", type=int, default=7, help="the simulator's data seed")
    args = parser.parse_args(argv)
    if not 1 <= args.days <= 366:
        parser.error("--days must be between 1 and 366")

    data_dir = Path(args.data_dir).resolve()
    os.environ.setdefault("PE_DATA_DIR", str(data_dir))
    os.environ.setdefault("DAGSTER_HOME", str(data_dir / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    Path(os.environ["DAGSTER_HOME"], "dagster.yaml").touch()
    os.environ.setdefault("PE_REQUESTS_PER_MINUTE", DEMO_REQUESTS_PER_MINUTE)

    config = SimulatorConfig(seed=args.seed, client_limit=DEMO_SIMULATOR_LIMIT, org_limit=2 * DEMO_SIMULATOR_LIMIT)
    with SimulatorServer(config, host="127.0.0.1", port=0) as sim:
        os.environ.update(
            GENESYSCLOUD_API_URL=sim.api_url,
            GENESYSCLOUD_LOGIN_URL=sim.login_url,
            GENESYSCLOUD_OAUTHCLIENT_ID=sim.client_id,
            GENESYSCLOUD_OAUTHCLIENT_SECRET=sim.client_secret,
        )
        today = datetime.now(UTC).date()
        first, last = today - timedelta(days=args.days), today - timedelta(days=1)
        os.environ.setdefault("PE_PARTITIONS_START", min(first, date(2024, 1, 1)).isoformat())
        print(f"simulator on {sim.api_url}; loading {first} .. {last} into {data_dir}", flush=True)
        success = _run(first, last)
    _print_summary(first, last)
    return 0 if success else 1


def _run(first: date, last: date) -> bool:
    # Imported here: the code location reads its settings from the environment set above.
    import warnings

    from dagster import BetaWarning, DagsterInstance, PreviewWarning, SupersessionWarning

    # Dagster's notes about its own API's maturity are for us, not for the person running the demo.
    for category in (BetaWarning, PreviewWarning, SupersessionWarning):
        warnings.filterwarnings("ignore", category=category)

    from pe_assets.definitions import code_location

    definitions = code_location()
    job = definitions.resolve_job_def("pe_daily_job")
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": last.isoformat(),
            },
            raise_on_error=False,
        )
    if not result.success:
        for event in result.all_events:
            if event.is_failure:
                print(f"FAILED: {event.message}", file=sys.stderr)
    return result.success


# The scorecard tables keep every extraction (a snapshot per scorecard and day): history, not state.
SCORECARD_HISTORY = ("fact_scorecard_performance", "fact_scorecard_score_distribution")
TABLES = (
    "dim_predictive_campaign",
    "fact_journey_step",
    "rejected_journey_step",
    *SCORECARD_HISTORY,
    "fact_predictive_journey",
    "scorecard_drift",
)
# The one-liner the demo prints; the summary reads the file the same way (duckdb 2.0 has no
# ``con.sql(...).fetchone()``: ``execute(...)`` then ``fetchall()`` or ``df()``).
EXAMPLE_QUERY = "SELECT * FROM funnel_daily_snapshot ORDER BY extraction_date DESC, campaign_id LIMIT 10"
LATEST_SNAPSHOT_QUERY = (
    "SELECT * FROM fact_scorecard_performance QUALIFY row_number() OVER "
    "(PARTITION BY scorecard_id, extraction_date ORDER BY extracted_at DESC) = 1"
)


def query_command(duckdb_path: Path, sql: str = EXAMPLE_QUERY) -> str:
    """A shell command that prints ``sql``'s answer from the DuckDB file, read-only."""
    # Double-quoted Python literals (JSON's escapes are Python's), so the shell quoting stays readable.
    code = (
        f"import duckdb; con = duckdb.connect({json.dumps(str(duckdb_path))}, read_only=True); "
        f"print(con.execute({json.dumps(sql)}).df().to_string())"
    )
    return shlex.join([sys.executable, "-c", code])


def _print_summary(first: date, last: date) -> None:
    # The same settings the code location read (PE_WAREHOUSE, PE_DUCKDB_PATH or PE_DATA_DIR).
    from pe_assets.config import Settings

    settings = Settings.from_env()
    if settings.warehouse != "duckdb":
        print(f"\nloaded into PE_WAREHOUSE={settings.warehouse}; query the tables there.")
        return

    import duckdb

    path = Path(settings.duckdb_path).resolve()
    if not path.exists():  # the run failed before its first write; its errors are above
        print(f"\nno DuckDB file at {path} yet")
        return
    # Read-only: DuckDB lets other processes read the file while nobody writes it.
    with duckdb.connect(str(path), read_only=True) as con:
        per_day = con.execute(
            "SELECT CAST(extraction_date AS VARCHAR) AS day, count(DISTINCT campaign_id) AS campaigns, "
            "count(*) AS steps, max(step_sequence) AS longest_funnel, "
            "CAST(sum(CASE WHEN pending_backfill THEN 1 ELSE 0 END) AS BIGINT) AS steps_pending_backfill "
            "FROM fact_predictive_journey WHERE extraction_date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE) "
            "GROUP BY 1 ORDER BY 1",
            [first.isoformat(), last.isoformat()],
        ).df()
        counts = {table: con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] for table in TABLES}
        snapshots, scorecard_days, most = con.execute(
            "SELECT coalesce(sum(n), 0), count(*), coalesce(max(n), 0) FROM (SELECT count(*) AS n "
            "FROM fact_scorecard_performance GROUP BY scorecard_id, extraction_date)"
        ).fetchall()[0]

    print("\nfact_predictive_journey by day:")
    print(per_day.to_string(index=False))
    print("\nrows per table (all days loaded so far):")
    for table, n in counts.items():
        print(f"  {table:36s} {n:>8d}{'  (history)' if table in SCORECARD_HISTORY else ''}")
    print(
        f"\n{' and '.join(SCORECARD_HISTORY)} are append-only history:\n"
        "every extraction adds one snapshot per scorecard and day (stamped extracted_at) and none is\n"
        "overwritten, so running the demo again adds new snapshots rather than duplicates\n"
        f"(now {snapshots} snapshots of {scorecard_days} scorecard-days, at most {most} per scorecard-day).\n"
        "fact_predictive_journey joins each day's latest snapshot; to read only the latest ones yourself:\n"
        f"  {LATEST_SNAPSHOT_QUERY}"
    )
    print(f"\nDuckDB file: {path}")
    print("query it (read-only, while no run writes to it), e.g. the dashboard view funnel_daily_snapshot:")
    print(f"  {query_command(path)}")


if __name__ == "__main__":
    sys.exit(main())
