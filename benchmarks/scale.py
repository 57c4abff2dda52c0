"""A year of data at 400 campaigns: per-step seconds, rows/s, peak RSS and requests, against days.

Prints figures and writes them to a JSON file and a PNG chart; never a test. Run:

    .venv/bin/python benchmarks/scale.py                      # 5, 30, 90 and 365 days, one run each
    .venv/bin/python benchmarks/scale.py --days 5 30 --chunked 0   # quicker
    .venv/bin/python benchmarks/scale.py --campaigns 100 400 1600  # memory against campaigns, 31 days

Each scenario runs in its own child process (so its peak RSS is pe_assets' alone) against a
simulator in another process with 400 campaigns, no binding budget (10,000 requests/min) and a clock set so that every
day is complete and final, into a fresh landing folder and DuckDB file: the whole seed graph
(``pe_daily_job``: extraction, landing, every table, drift, views and checks) as ONE ranged run.
A single-run scenario then rebuilds every table from the same landed files into a new DuckDB
file twice: after dropping the kernel's page cache (root only; as for a backfill of data landed
long ago) and warm, so landing I/O and transform CPU can be told apart.
``--chunked N`` adds the longest range as consecutive runs of N days (what PE_BACKFILL_DAYS_PER_RUN
makes a backfill do; one process, so its peak RSS covers them all).
``--campaigns`` instead runs ``--days`` (default 31) at each campaign count, into
``results/scale_campaigns.json``: peak RSS against campaigns (tables are rebuilt in chunks of at
most 12,400 campaign-days, so more campaigns make shorter chunks, not bigger ones).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAST_DAY = date(2025, 12, 31)
NOW = datetime(2026, 1, 10, 12, tzinfo=UTC)  # every day complete, every outcome final
CAMPAIGNS = 400
EXTRACTION_STEP = "raw_extraction"
#: The journey path: flatten, number, validate and write the step tables, then the join.
JOURNEY_STEPS = ("journey_step_tables", "fact_predictive_journey")


def start_simulator(campaigns: int) -> tuple[subprocess.Popen[str], str]:
    """The simulator in its own process (its world and request log are not pe_assets' memory)."""
    command = [
        sys.executable,
        "-m",
        "pe_dev.simulator",
        "--port",
        "0",
        "--campaigns",
        str(campaigns),
        "--client-limit",
        "1000000",
        "--org-limit",
        "1000000",
        "--now",
        NOW.isoformat(),
    ]
    # Its output goes to a file: a pipe nobody drains would block the simulator once full.
    log = Path(tempfile.mkstemp(prefix="pe-scale-simulator-", suffix=".log")[1])
    process = subprocess.Popen(command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text().splitlines():
            if "listening on" in line:
                return process, line.rsplit(" ", 1)[-1].strip()
        time.sleep(0.2)
    raise RuntimeError(f"the simulator did not start: {log.read_text()[-2000:]}")


def child(days: int, chunk_days: int | None, url: str) -> None:
    """One scenario in this process (pe_assets only); prints one JSON line."""
    import logging

    import duckdb

    from pe_assets.defs.common.resources import (
        LandingZoneResource,
        OAuthClientConfig,
        PredictiveEngagementResource,
        UtcClock,
    )
    from pe_assets.warehouse import DuckDBWarehouse
    from pe_dev.pipeline import materializations, run_days
    from pe_dev.simulator import default_clients

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    first = LAST_DAY - timedelta(days=days - 1)
    client = default_clients()[0]
    steps: dict[str, float] = {}
    requests = rate_limited = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        resources = {
            "pe_api": PredictiveEngagementResource(
                api_url=url,
                login_url=url,
                oauth_clients=[OAuthClientConfig(client_id=client.client_id, client_secret=client.client_secret)],
                requests_per_minute=10_000,
                budget_path=str(Path(tmp) / "state" / "rate_budget.sqlite"),
            ),
            "landing": LandingZoneResource(url=str(Path(tmp) / "landing")),
            "warehouse": DuckDBWarehouse(path=str(Path(tmp) / "warehouse.duckdb")),
            "clock": UtcClock(offset_seconds=(NOW - datetime.now(UTC)).total_seconds()),
        }
        ranges = [(first, LAST_DAY)]
        if chunk_days:
            ranges = [
                (start, min(start + timedelta(days=chunk_days - 1), LAST_DAY))
                for start in (first + timedelta(days=n) for n in range(0, days, chunk_days))
            ]
        success = True
        for start, end in ranges:
            result = run_days(resources, start, end)
            success = success and result.success
            _add_step_seconds(result, steps)
            # A ranged run records one materialization per day, each with the step's whole figures.
            extraction = materializations(result, "raw_campaign_journeys")[0].metadata
            requests += extraction["api_requests"].value  # type: ignore[operator]
            rate_limited += extraction["api_429s"].value  # type: ignore[operator]
        wall = time.perf_counter() - started
        with duckdb.connect(str(Path(tmp) / "warehouse.duckdb"), read_only=True) as con:
            rows = con.execute("SELECT count(*) FROM fact_journey_step").fetchone()[0]
        # The tables again from the same landed files, into a new DuckDB file: with the page cache
        # dropped first (as for a backfill of old data; needs root), then warm.
        rebuild: dict[str, dict[str, float]] = {}
        for cache in ("cold", "warm") if len(ranges) == 1 else ():
            if cache == "cold" and not _drop_page_cache():
                continue
            again = {**resources, "warehouse": DuckDBWarehouse(path=str(Path(tmp) / f"rebuild-{cache}.duckdb"))}
            result = run_days(again, first, LAST_DAY, selection="not group:raw")
            success = success and result.success
            rebuild[cache] = _add_step_seconds(result, {})
    print(
        json.dumps(
            {
                "days": days,
                "runs": len(ranges),
                "success": success,
                "wall_seconds": wall,
                "step_seconds": steps,
                "rebuild_step_seconds": rebuild,
                "fact_journey_step_rows": rows,
                "requests": requests,
                "429s": rate_limited,
            }
        ),
        flush=True,
    )


def _add_step_seconds(result: object, steps: dict[str, float]) -> dict[str, float]:
    """``steps`` plus each successful step's seconds in ``result`` (a Dagster run result)."""
    for event in result.all_events:  # type: ignore[attr-defined]
        if event.event_type_value == "STEP_SUCCESS":
            seconds = event.event_specific_data.duration_ms / 1000
            steps[event.step_key] = steps.get(event.step_key, 0.0) + seconds
    return steps


def _drop_page_cache() -> bool:
    """Empty the kernel's page, dentry and inode caches (root only); whether it was done."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def measure(days: int, chunk_days: int | None, campaigns: int = CAMPAIGNS) -> dict[str, object]:
    """Run one scenario in a child process; add its peak RSS (of that process alone)."""
    simulator, url = start_simulator(campaigns)
    try:
        command = [sys.executable, __file__, "--child", str(days), "--chunk", str(chunk_days or 0), "--url", url]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        output = process.stdout.read() if process.stdout else ""
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        simulator.terminate()
        simulator.wait(30)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"scenario {days} days failed: {output[-2000:]}")
    figures = json.loads(output.strip().splitlines()[-1])
    figures["campaigns"] = campaigns
    figures["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    steps = figures["step_seconds"]
    non_extraction = sum(s for name, s in steps.items() if name != EXTRACTION_STEP)
    journey = sum(steps.get(name, 0.0) for name in JOURNEY_STEPS)
    rows = max(1, figures["fact_journey_step_rows"])
    figures["journey_path_seconds_per_1m_rows"] = journey / rows * 1e6
    figures["non_extraction_seconds_per_1m_rows"] = non_extraction / rows * 1e6
    figures["rows_per_second_non_extraction"] = rows / non_extraction if non_extraction else None
    for cache, rebuilt in figures.get("rebuild_step_seconds", {}).items():
        rebuilt_journey = sum(rebuilt.get(name, 0.0) for name in JOURNEY_STEPS)
        figures[f"rebuild_{cache}_journey_path_seconds_per_1m_rows"] = rebuilt_journey / rows * 1e6
        figures[f"rebuild_{cache}_all_seconds_per_1m_rows"] = sum(rebuilt.values()) / rows * 1e6
    return figures


def chart(results: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = [r for r in results if r["runs"] == 1]
    days = [r["days"] for r in single]
    fig, left = plt.subplots(figsize=(8, 4.5))
    left.plot(days, [r["rows_per_second_non_extraction"] for r in single], "o-", color="tab:blue")
    left.set_xlabel("days in one ranged run (400 campaigns)")
    left.set_ylabel("fact_journey_step rows/s, all non-extraction steps", color="tab:blue")
    right = left.twinx()
    right.plot(days, [r["peak_rss_mb"] for r in single], "s--", color="tab:red", label="one run")
    chunked = [r for r in results if r["runs"] > 1]
    if chunked:
        right.plot([r["days"] for r in chunked], [r["peak_rss_mb"] for r in chunked], "D", color="tab:purple")
        right.annotate("chunked runs", (chunked[0]["days"], chunked[0]["peak_rss_mb"]), fontsize=8)
    right.set_ylabel("peak RSS (MB; single runs incl. their 2 rebuilds)", color="tab:red")
    left.set_title("pe_assets at 400 campaigns: throughput and memory against the range")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, nargs="+", help="default: 5 30 90 365; with --campaigns: 31")
    parser.add_argument("--campaigns", type=int, nargs="+", help="campaign counts to run --days at (default 31)")
    parser.add_argument("--chunked", type=int, default=31, help="days per run for the longest range; 0: skip")
    parser.add_argument("--chunked-only", action="store_true", help="only the chunked scenario")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.chunk or None, args.url)
        return 0
    if args.campaigns:
        return by_campaigns(args.campaigns, args.days[0] if args.days else 31)
    args.days = args.days or [5, 30, 90, 365]
    results = []
    scenarios = [] if args.chunked_only else [(d, None) for d in args.days]
    scenarios += [(max(args.days), args.chunked)] if args.chunked else []
    print(
        "| days | runs | extraction s | non-extraction s | journey path s/1M rows | all non-extraction s/1M rows "
        "| rows/s | peak RSS MB | requests | 429s | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for days, chunk in scenarios:
        r = measure(days, chunk)
        results.append(r)
        steps = r["step_seconds"]
        extraction = steps.get(EXTRACTION_STEP, 0.0)
        print(
            f"| {days} | {r['runs']} | {extraction:.1f} | {sum(steps.values()) - extraction:.1f} "
            f"| {r['journey_path_seconds_per_1m_rows']:.1f} | {r['non_extraction_seconds_per_1m_rows']:.1f} "
            f"| {r['rows_per_second_non_extraction']:,.0f} | {r['peak_rss_mb']:.0f} | {r['requests']:,} "
            f"| {r['429s']} | {r['wall_seconds']:.0f} |",
            flush=True,
        )
        for cache in r.get("rebuild_step_seconds", {}):
            print(
                f"|   rebuild, {cache} cache | | | {sum(r['rebuild_step_seconds'][cache].values()):.1f} "
                f"| {r[f'rebuild_{cache}_journey_path_seconds_per_1m_rows']:.1f} "
                f"| {r[f'rebuild_{cache}_all_seconds_per_1m_rows']:.1f} | | | | | |",
                flush=True,
            )
        # Written after every scenario: a long benchmark stopped half-way keeps what it measured.
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    single = sorted((r for r in results if r["runs"] == 1), key=lambda r: r["days"])
    if len(single) >= 2:
        small, large = single[-2], single[-1]

        def seconds(r: dict[str, object], names: tuple[str, ...] | None) -> float:
            steps = r["step_seconds"]
            return sum(s for n, s in steps.items() if (n in names if names else n != EXTRACTION_STEP))

        extra_rows = large["fact_journey_step_rows"] - small["fact_journey_step_rows"]
        for label, names in (("journey path", JOURNEY_STEPS), ("all non-extraction steps", None)):
            marginal = (seconds(large, names) - seconds(small, names)) / extra_rows * 1e6
            print(f"marginal {label}: {marginal:.1f} s per extra 1M rows ({small['days']} -> {large['days']} days)")
    chart(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def by_campaigns(counts: list[int], days: int) -> int:
    """Peak RSS and step seconds of one ``days``-day run at each campaign count."""
    out = HERE / "results" / "scale_campaigns.json"
    results = []
    print("| campaigns | days | fact_journey_step rows | extraction s | non-extraction s | peak RSS MB | requests |")
    print("|---|---|---|---|---|---|---|")
    for campaigns in counts:
        r = measure(days, None, campaigns)
        results.append(r)
        steps = r["step_seconds"]
        extraction = steps.get(EXTRACTION_STEP, 0.0)
        print(
            f"| {campaigns} | {days} | {r['fact_journey_step_rows']:,} | {extraction:.1f} "
            f"| {sum(steps.values()) - extraction:.1f} | {r['peak_rss_mb']:.0f} | {r['requests']:,} |",
            flush=True,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
