"""Fixed cost of a one-day run: process start to first API request, last request to process exit.

Prints figures; never a test. Run:  .venv/bin/python benchmarks/fixed_cost.py [--repeat 3]

For each source (PE_SOURCE), a one-day ``dagster asset materialize -m pe_assets.definitions
--select '*' --partition D`` runs as its own process (a fresh DAGSTER_HOME, landing folder and
DuckDB file) against a simulator in this process; the simulator's request log gives the first and
last API request (token requests excluded), the process's start and exit bound the run. With the
real source a daily run is a handful of requests, so these fixed costs are most of its time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pe_dev.simulator import SimulatorConfig, SimulatorServer

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2024, 3, 5)
NOW = datetime(2024, 3, 20, 12, tzinfo=UTC)


def one_run(source: str) -> dict[str, float]:
    config = SimulatorConfig(seed=7, client_limit=100_000, org_limit=100_000)
    with SimulatorServer(config, host="127.0.0.1", port=0) as sim, tempfile.TemporaryDirectory() as tmp:
        sim.set_now(NOW)
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GENESYSCLOUD_", "PE_", "DAGSTER_"))},
            "DAGSTER_HOME": str(home),
            "GENESYSCLOUD_API_URL": sim.api_url,
            "GENESYSCLOUD_LOGIN_URL": sim.login_url,
            "GENESYSCLOUD_OAUTHCLIENT_ID": sim.client_id,
            "GENESYSCLOUD_OAUTHCLIENT_SECRET": sim.client_secret,
            "PE_DATA_DIR": str(Path(tmp) / "data"),
            "PE_SOURCE": source,
            "PE_REQUESTS_PER_MINUTE": "10000",
        }
        command = [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "pe_assets.definitions",
            "--select",
            "*",
            "--partition",
            DAY.isoformat(),
        ]
        started = time.time()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=600)
        ended = time.time()
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode()[-3000:])
        api = [r for r in sim.log_records() if r["path"].startswith("/api/v2/")]
        first = datetime.fromisoformat(api[0]["wall_time"].replace("Z", "+00:00")).timestamp()
        last = datetime.fromisoformat(api[-1]["wall_time"].replace("Z", "+00:00")).timestamp()
        return {
            "start_to_first_request": first - started,
            "api_stretch": last - first,
            "last_request_to_exit": ended - last,
            "total": ended - started,
            "requests": len(api),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print("| source | requests | start -> first request | API stretch | last request -> exit | total |")
    print("|---|---|---|---|---|---|")
    for source in ("predictive-engagement", "journey-aggregates"):
        runs = [one_run(source) for _ in range(args.repeat)]

        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        print(
            f"| {source} | {median('requests'):.0f} | {median('start_to_first_request'):.1f} s "
            f"| {median('api_stretch'):.1f} s | {median('last_request_to_exit'):.1f} s | {median('total'):.1f} s |",
            flush=True,
        )
    print(f"(median of {args.repeat} runs each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
