"""A long backfill through a split deployment: chunked runs (PE_BACKFILL_DAYS_PER_RUN) vs one run.

    .venv/bin/python benchmarks/backfill_chunks.py                      # 90 days: one run, 30, 15
    .venv/bin/python benchmarks/backfill_chunks.py --days 30 --chunks 0,10

Each scenario gets its own PostgreSQL, simulator (small world, seed 0, no server limits) and split
deployment (``pe_dev.deployment``: code server, webserver and daemon as separate processes on
``deploy/dagster.yaml``: 4 runs at once, pe_api pool of 2). A partition backfill of ``pe_daily_job``
is launched through the GraphQL API, and timed from the launch until the daemon marks it complete.
The backfill daemon's 30 s loop is cut to 2 s (as in the tests) so its polling does not dominate.

Printed per scenario: wall time, runs, API requests (the simulator's log), peak RSS of all the
deployment's processes together, run workers included (sampled from /proc every 0.5 s),
and whether the warehouse equals the first scenario's row for row (``pe_dev.chaos``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pe_dev.chaos import compare, snapshot, start_simulator  # noqa: E402
from pe_dev.deployment import SplitDeployment  # noqa: E402
from pe_dev.postgres import PostgresServer  # noqa: E402

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Outcome:
    label: str
    status: str
    seconds: float
    runs: int
    requests: int
    peak_total_mb: float
    warehouse: Path


class RssSampler(threading.Thread):
    """Peak resident memory of the processes in some process groups, from /proc."""

    def __init__(self, groups: set[int]) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.peak_total_kb = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.5):
            total = 0
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    stat = Path(entry.path, "stat").read_text()
                    # Fields after the ")" that ends the command name: state, ppid, pgrp, ...
                    fields = stat[stat.rindex(")") + 2 :].split()
                    if int(fields[2]) not in self.groups:
                        continue
                    rss_kb = int(Path(entry.path, "statm").read_text().split()[1]) * PAGE_KB
                except (OSError, ValueError):
                    continue  # the process ended while being read
                total += rss_kb
            self.peak_total_kb = max(self.peak_total_kb, total)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def scenario(work: Path, first: date, last: date, days_per_run: int | None) -> Outcome:
    label = f"{days_per_run} days per run" if days_per_run else "one run"
    folder = work / (f"chunks-{days_per_run}" if days_per_run else "one-run")
    pg = PostgresServer(folder / "pg").start()
    sim = start_simulator()
    deployment = SplitDeployment(
        folder / "deployment",
        pg,
        sim,
        days_per_run=days_per_run,
        partitions_start=(first - timedelta(days=1)).isoformat(),
        backfill_loop_seconds=2,
    )
    try:
        deployment.start()
        sampler = RssSampler({p.pid for p in deployment.processes.values()})
        sampler.start()
        requests_before = len(sim.log_records())
        started = time.monotonic()
        backfill_id = deployment.launch_backfill(first, last)
        status = deployment.wait_backfill(backfill_id, timeout=3600)
        seconds = time.monotonic() - started
        sampler.stop()
        runs = deployment.backfill_runs(backfill_id)
        return Outcome(
            label=label,
            status=status,
            seconds=seconds,
            runs=len(runs),
            requests=len(sim.log_records()) - requests_before,
            peak_total_mb=sampler.peak_total_kb / 1024,
            warehouse=deployment.data_dir / "warehouse.duckdb",
        )
    finally:
        deployment.stop()
        sim.stop()
        pg.stop("immediate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--first", default="2023-11-20", help="first day (the simulator's clock is 2024-03-20)")
    parser.add_argument("--chunks", default="0,30,15", help="days per run to compare; 0 = one run")
    args = parser.parse_args()
    first = date.fromisoformat(args.first)
    last = first + timedelta(days=args.days - 1)
    # Not under /tmp/pytest-of-*: the PostgreSQL server runs as the postgres user and must reach it.
    work = Path(tempfile.mkdtemp(prefix="pe_backfill_chunks_"))
    os.chmod(work, 0o755)
    outcomes: list[Outcome] = []
    try:
        for chunk in (int(c) for c in args.chunks.split(",")):
            outcome = scenario(work, first, last, chunk or None)
            outcomes.append(outcome)
            print(f"{outcome.label}: {outcome.status} in {outcome.seconds:.1f} s, {outcome.runs} runs", flush=True)
        print(f"\n{args.days} days ({first} .. {last}), {os.cpu_count()} cores")
        columns = ["scenario", "status", "wall", "runs", "API requests", "peak RSS, all processes"]
        columns += ["warehouse = first scenario"]
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        reference = snapshot(outcomes[0].warehouse)
        for o in outcomes:
            comparison = compare(reference, snapshot(o.warehouse))
            same = "yes" if comparison.equal else f"NO {comparison.by_table}"
            print(
                f"| {o.label} | {o.status} | {o.seconds:.1f} s | {o.runs} | {o.requests} "
                f"| {o.peak_total_mb:.0f} MB | {same} ({comparison.rows_compared} rows) |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
