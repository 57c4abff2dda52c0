"""Chaos benchmark: faulty runs vs fault-free runs of the same world, seed after seed.

Prints figures; never a test. Run:  .venv/bin/python benchmarks/chaos.py --seeds 20 --rate 0.10

For each seed: a fault-free run and a run against a simulator that fails ``rate`` of the API
requests (5xx, dropped connection, an answer slower than the client's timeout, 429, token revoked;
drawn from an RNG seeded with the seed), both materializing the same days of a small world into
their own DuckDB file; then every warehouse table is compared row for row, load/extraction
timestamps left out. Step failures that outlive the client's retries get the API assets' Dagster
RetryPolicy (same max_retries, delay shortened to 0.2 s); a run that still fails is re-run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pe_dev.chaos import chaos_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds (1..N)")
    parser.add_argument("--rate", type=float, default=0.10, help="fraction of API requests given a fault")
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=0.4, help="client timeout, seconds")
    parser.add_argument("--slow", type=float, default=0.8, help="a slow fault's delay, seconds (> timeout)")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # the client's retry warnings and Dagster's event log
    faults: Counter[str] = Counter()
    runs = converged_clean = needed_retry = reruns = rows = mismatches = dups = lost = not_converged = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pe-chaos-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            out = chaos_run(
                seed, args.rate, Path(tmp), days=args.days, timeout_seconds=args.timeout, slow_seconds=args.slow
            )
            runs += 1
            faults += out.faults_injected
            rows += out.comparison.rows_compared
            mismatches += out.comparison.mismatches
            dups += out.comparison.duplicates
            lost += out.comparison.lost
            reruns += out.reruns
            if out.dagster_retries or out.reruns:
                needed_retry += 1
            elif out.converged:
                converged_clean += 1
            if not out.converged:
                not_converged += 1
            print(
                f"seed {seed:>3}: requests={out.requests:>3} faults={sum(out.faults_injected.values()):>2} "
                f"dagster_retries={out.dagster_retries} reruns={out.reruns} rows={out.comparison.rows_compared} "
                f"mismatches={out.comparison.mismatches} dups={out.comparison.duplicates} "
                f"{'converged' if out.converged else 'NOT CONVERGED ' + str(out.comparison.by_table)} "
                f"({out.seconds:.1f}s)",
                flush=True,
            )
    print()
    print(f"rate={args.rate} seeds={args.seeds} days={args.days} wall={time.monotonic() - started:.0f}s")
    print(f"runs                               {runs}")
    print(f"faults injected                    {sum(faults.values())} {dict(sorted(faults.items()))}")
    print(f"runs converged without retry       {converged_clean}")
    print(f"runs that needed a Dagster retry   {needed_retry} (re-runs after a failed run: {reruns})")
    print(f"runs not converged                 {not_converged}")
    print(f"rows compared                      {rows}")
    print(f"mismatches                         {mismatches} (lost {lost}, duplicates {dups})")
    return 0 if not_converged == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
