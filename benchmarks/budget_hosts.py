"""Multi-host budget benchmark: 1 and 3 extracting processes sharing one PostgreSQL rate budget.

Prints a markdown table; never a test. Run (as root for network namespaces; otherwise the hosts
are plain processes on loopback):  .venv/bin/python benchmarks/budget_hosts.py [--days-per-host 6 ...]

Each scenario starts a simulator whose per-client limit *equals* the cap (so any overrun is a 429)
and a PostgreSQL budget, then N host processes (each in its own network namespace, reaching both
over a bridge; see ``pe_dev/netns.py``), each extracting its own UTC days through the real
client with the same OAuth client. Figures come from the simulator's request log:
- throughput = requests / (last - first request) / (cap / window): the benchmarks' usual
  "achieved rate over allowed rate"; a short run can exceed 1.0 because the first window bursts;
- shortest-span ratio = (ceil(requests / cap) - 1) windows / the span observed: at most 1.0
  (no window may hold more than the cap), so the burst does not flatter it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pe_dev.netns import MultiHostRun, NamespaceUnavailable, run_hosts


def scenario(count: int, args: argparse.Namespace) -> MultiHostRun:
    options = {
        "cap": args.cap,
        "window": args.window,
        "days_per_host": args.days_per_host,
        "concurrency": args.concurrency,
    }
    try:
        return run_hosts(count, namespaces=not args.loopback, **options)
    except NamespaceUnavailable as exc:
        print(f"(network namespaces unavailable: {exc}; hosts run as processes on loopback)")
        return run_hosts(count, namespaces=False, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=int, default=20, help="requests per window per OAuth client")
    parser.add_argument("--window", type=float, default=2.0, help="rate window in seconds (60 in production)")
    parser.add_argument("--days-per-host", type=int, default=6, help="UTC days each host extracts")
    parser.add_argument("--concurrency", type=int, default=8, help="max_concurrency of each host's client")
    parser.add_argument("--loopback", action="store_true", help="plain processes on loopback, no namespaces")
    args = parser.parse_args()
    print(
        f"cap {args.cap} per {args.window:g} s window (simulator limit = cap), {args.days_per_host} days "
        f"per host, max_concurrency {args.concurrency} per host\n"
    )
    print("| hosts | isolation | requests | 429s | most in a window | span | throughput | shortest-span ratio |")
    print("|-------|-----------|----------|------|------------------|------|------------|---------------------|")
    for count in (1, 3):
        run = scenario(count, args)
        throughput = run.requests / run.span_seconds / (args.cap / args.window)
        isolation = "netns" if run.namespaces else "loopback"
        print(
            f"| {count} | {isolation} | {run.requests} | {run.rate_limited_429s} | {run.max_in_window} / {args.cap} "
            f"| {run.span_seconds:.2f} s | {throughput:.3f} | {run.efficiency:.3f} |"
        )


if __name__ == "__main__":
    main()
