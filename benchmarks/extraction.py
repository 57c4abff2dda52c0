"""Extraction benchmark: the client against the simulator, vs the seed guide's naive loop.

Prints figures; never a test. Run:  .venv/bin/python benchmarks/extraction.py [--days 15 ...]

Every scenario extracts the same world (N campaigns x D UTC days of journey pages, plus the
scorecards' daily performance) from its own simulator with a set latency and a server limit far
above the client's cap, so any 429 would be the client's fault. The window is shrunk (default:
80 requests per 2 s window = 40 req/s per OAuth client) so the whole run stays around a minute.

Figures per scenario: requests made vs the minimum needed, 429s, wall time, the most requests in
any window (from the simulator's log, must be <= cap), efficiency = achieved rate / allowed rate
(the first window may burst up to the cap, so over a short run a sliding-window client can
exceed 1.0; in the long run it tends to window / (window + response time)).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # pe_dev lives in the repository, not the wheel

from pe_assets.client import OAuthCredentials, PredictiveEngagementClient
from pe_dev.simulator import READ_SCOPES, ClientSpec, SimulatorConfig, SimulatorServer


@dataclass
class Result:
    name: str
    requests: int
    minimum: int
    r429: int
    wall: float
    max_window: int
    cap: int
    n_clients: int
    allowed_rate: float

    def line(self) -> str:
        rate = self.requests / self.wall
        return (
            f"{self.name:<28} requests={self.requests:>4} (min {self.minimum:>4})  429s={self.r429:>3}  "
            f"wall={self.wall:6.2f}s  rate={rate:6.1f}/s of {self.allowed_rate:6.1f}/s  "
            f"efficiency={rate / self.allowed_rate:5.2f}  "
            f"max/window={self.max_window}/{self.cap}"
        )


def max_in_window(times: list[float], window: float) -> int:
    times, best, j = sorted(times), 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def make_sim(args: argparse.Namespace, n_clients: int) -> SimulatorServer:
    clients = [ClientSpec(f"bench-{i}", f"bench-secret-{i}", READ_SCOPES) for i in range(n_clients)]
    return SimulatorServer(
        SimulatorConfig(
            seed=7,
            n_campaigns=args.campaigns,
            latency=args.latency,
            client_limit=100_000,  # far above the cap: a 429 could only come from the client
            org_limit=100_000,
            window_seconds=args.window,
            clients=clients,
        )
    ).start()


def minimum_requests(sim: SimulatorServer, days: list[date]) -> int:
    """Listing pages + journey pages of every live campaign-day + one per scorecard-day."""
    campaigns, scorecards = sim.campaigns(), sim.scorecards()
    live = [c["id"] for c in campaigns if c["status"] != "archived"]
    journey = sum(max(1, math.ceil(len(sim.expected_steps(cid, d)) / 1000)) for cid in live for d in days)
    return math.ceil(len(campaigns) / 100) + math.ceil(len(scorecards) / 100) + journey + len(scorecards) * len(days)


def stats_from_log(sim: SimulatorServer, window: float) -> tuple[int, int, int]:
    log = [r for r in sim.request_log if r.path != "/oauth/token"]
    per_client: dict[str | None, list[float]] = {}
    for r in log:
        per_client.setdefault(r.client_id, []).append(r.monotonic)
    worst = max(max_in_window(ts, window) for ts in per_client.values())
    return len(log), sum(1 for r in log if r.status == 429), worst


def run_client(args: argparse.Namespace, n_clients: int, days: list[date]) -> Result:
    sim = make_sim(args, n_clients)
    try:
        minimum = minimum_requests(sim, days)
        creds = [OAuthCredentials(c.client_id, c.client_secret) for c in sim.config.clients]
        with PredictiveEngagementClient(
            sim.api_url,
            sim.login_url,
            creds,
            requests_per_minute=args.cap,
            rate_window_seconds=args.window,
            max_concurrency=args.concurrency,
        ) as client:
            started = time.monotonic()
            live = [c["id"] for c in client.list_campaigns() if c["status"] != "archived"]
            scorecards = [s["id"] for s in client.list_scorecards()]
            tasks: list[tuple[str, str, date]] = [("j", cid, d) for cid in live for d in days]
            tasks += [("s", sid, d) for sid in scorecards for d in days]

            def one(task: tuple[str, str, date]) -> Any:
                kind, ident, day = task
                if kind == "j":
                    return client.get_campaign_journey_pages(ident, day)
                return client.get_scorecard_performance(ident, day)

            client.map(one, tasks)
            wall = time.monotonic() - started
        requests, r429, worst = stats_from_log(sim, args.window)
        return Result(
            f"client, {n_clients} OAuth client(s)",
            requests,
            minimum,
            r429,
            wall,
            worst,
            args.cap,
            n_clients,
            n_clients * args.cap / args.window,
        )
    finally:
        sim.stop()


def run_naive(args: argparse.Namespace, days: list[date]) -> Result:
    """The guide's loop, corrected only enough to run (params sent on page 1, relative
    nextPageUri resolved against the host); sequential, one connection per call, sleep 0.5 s
    between pages. Scorecards fetched the same plain way."""
    sim = make_sim(args, 1)
    try:
        minimum = minimum_requests(sim, days)
        spec = sim.config.clients[0]
        started = time.monotonic()
        token = httpx.post(
            sim.login_url + "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(spec.client_id, spec.client_secret),
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        host = sim.api_url
        campaigns = httpx.get(
            f"{host}/api/v2/predictive-engagement/campaigns", params={"pageSize": 100}, headers=headers
        ).json()["entities"]
        scorecards = httpx.get(
            f"{host}/api/v2/predictive-engagement/scorecards", params={"pageSize": 100}, headers=headers
        ).json()["entities"]
        for campaign in campaigns:
            if campaign["status"] == "archived":
                continue
            for day in days:
                base_url = f"{host}/api/v2/predictive-engagement/campaigns/{campaign['id']}/analytics"
                url: str | None = base_url
                params = {
                    "dateFrom": f"{day}T00:00:00Z",
                    "dateTo": f"{day + timedelta(days=1)}T00:00:00Z",
                    "groupBy": "step",
                    "pageSize": 1000,
                }
                records = []
                while url:
                    response = httpx.get(url, headers=headers, params=params if url == base_url else None)
                    response.raise_for_status()
                    data = response.json()
                    records.extend(data.get("steps", []))
                    url = data.get("nextPageUri")
                    if url:
                        url = urljoin(host, url)
                        time.sleep(0.5)  # Respect rate limits
        for scorecard in scorecards:
            for day in days:
                httpx.get(
                    f"{host}/api/v2/predictive-engagement/scorecards/{scorecard['id']}/analytics",
                    params={
                        "dateFrom": f"{day}T00:00:00Z",
                        "dateTo": f"{day + timedelta(days=1)}T00:00:00Z",
                        "metric": "performance",
                    },
                    headers=headers,
                ).raise_for_status()
        wall = time.monotonic() - started
        requests, r429, worst = stats_from_log(sim, args.window)
        return Result("naive guide loop", requests, minimum, r429, wall, worst, args.cap, 1, args.cap / args.window)
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=30)
    parser.add_argument("--days", type=int, default=15)
    parser.add_argument("--cap", type=int, default=80, help="requests per window per OAuth client")
    parser.add_argument("--window", type=float, default=2.0, help="rate window in seconds (60 in production)")
    parser.add_argument("--latency", type=float, default=0.05, help="simulator latency per request, seconds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    probe = make_sim(args, 1)
    last = (probe.now() - timedelta(days=1)).date()
    probe.stop()
    days = [last - timedelta(days=i) for i in range(args.days)]
    print(
        f"world: {args.campaigns} campaigns x {args.days} days, latency {args.latency * 1000:.0f} ms, "
        f"cap {args.cap} per {args.window:g} s window per OAuth client "
        f"(= {args.cap * 60 / args.window:.0f}/min), max_concurrency {args.concurrency}"
    )
    results = [run_client(args, n, days) for n in (1, 2, 4)]
    if not args.skip_naive:
        results.append(run_naive(args, days))
    for result in results:
        print(result.line())
    one, two, four = results[0], results[1], results[2]
    print(
        f"speed-up: 2 clients {one.wall / two.wall:.2f}x, 4 clients {one.wall / four.wall:.2f}x"
        + (f"; client vs naive {results[3].wall / one.wall:.2f}x" if not args.skip_naive else "")
    )


if __name__ == "__main__":
    main()
