"""Command line: ``python -m pe_dev.simulator --port 8765 --seed 7`` (or ``python3 dev.py simulator ...``).

Prints ``pe-simulator listening on http://HOST:PORT`` once it serves, then runs until SIGINT or
SIGTERM and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from types import FrameType

from pe_dev.simulator.config import (
    FAULT_KINDS,
    JOURNEY_FAULT_KINDS,
    ClientSpec,
    SimulatorConfig,
    default_clients,
)
from pe_dev.simulator.server import SimulatorServer

_DESCRIPTION = """\
Local HTTP simulator of two Genesys Cloud API contracts, served on one host:

  * the seed contract, /api/v2/predictive-engagement/... (campaigns, scorecards, analytics;
    pe_assets/contract/predictive-engagement.openapi.yaml), authorized by OAuth scopes;
  * the real journey endpoints, GET /api/v2/journey/actionmaps and
    /api/v2/analytics/journeys/aggregates/{query,jobs} (pe_assets/contract/
    genesys-journey-aggregates.openapi.yaml), authorized by the client's permissions.

Both share POST /oauth/token (client credentials, HTTP Basic or form fields), the rate limits
and the business clock. Admin endpoints live under /_simulator/ (health, clock, faults, request
log, ground truth).

Prints "pe-simulator listening on http://HOST:PORT" once it serves; SIGINT/SIGTERM stop it (exit 0).
"""


def _clients_epilog() -> str:
    """The default OAuth clients, read from the config defaults (one source of truth)."""
    lines = ["default OAuth clients (--client replaces them):"]
    for client in default_clients():
        lines.append(f"  {client.client_id} / secret {client.client_secret}")
        for label, values in (("scopes:", client.scopes), ("permissions:", client.permissions)):
            wrapped = textwrap.wrap(" ".join(values), 80, break_on_hyphens=False) or ["(none)"]
            lines += [f"      {label if i == 0 else '':<13}{part}" for i, part in enumerate(wrapped)]
    lines.append("journey bad-input faults (POST /_simulator/journey-faults {kind, count, ...}):")
    lines.append("  " + ", ".join(JOURNEY_FAULT_KINDS[:5]) + ",")
    lines.append("  " + ", ".join(JOURNEY_FAULT_KINDS[5:]))
    return "\n".join(lines)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends each option's default (when it has one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or "%(default)" in text or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def _client(text: str) -> ClientSpec:
    """Parse ``id:secret[:scope1,scope2,...]`` (no scopes -> the two read scopes)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError("expected id:secret[:scope,scope...]")
    if len(parts) == 3 and parts[2]:
        return ClientSpec(parts[0], parts[1], tuple(s for s in parts[2].split(",") if s))
    return ClientSpec(parts[0], parts[1])


def _permissions(text: str) -> tuple[str, tuple[str, ...]]:
    """Parse ``client-id=perm1,perm2`` (an empty list: no permissions at all)."""
    client_id, sep, perms = text.partition("=")
    if not sep or not client_id:
        raise argparse.ArgumentTypeError("expected client-id=permission[,permission...]")
    return client_id, tuple(p.strip() for p in perms.split(",") if p.strip())


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kinds {unknown}; choose from {FAULT_KINDS}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    d = SimulatorConfig()
    p = argparse.ArgumentParser(
        prog="pe-simulator", description=_DESCRIPTION, epilog=_clients_epilog(), formatter_class=_Formatter
    )
    server = p.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="interface to bind")
    server.add_argument("--port", type=int, default=8765, help="TCP port; 0 picks a free one")
    server.add_argument("--latency", type=float, default=d.latency, help="seconds added to every API request")
    server.add_argument("--log-file", default=None, help="append every request record as a JSON line here")

    world = p.add_argument_group("seed contract world (/api/v2/predictive-engagement)")
    world.add_argument("--seed", type=int, default=d.seed, help="seed of both worlds (same seed, same answers)")
    world.add_argument("--campaigns", type=int, default=d.n_campaigns, help="number of campaigns (>= 5)")
    world.add_argument(
        "--scorecards", type=int, default=None, help="number of scorecards (default: max(2, campaigns // 3))"
    )
    world.add_argument(
        "--big-steps", type=int, default=d.big_campaign_steps, help="steps per day of the 'big' campaign"
    )

    journey = p.add_argument_group("journey aggregates contract (/api/v2/journey, /api/v2/analytics/journeys)")
    journey.add_argument("--action-maps", type=int, default=d.n_action_maps, help="action maps in the listing (>= 5)")
    journey.add_argument(
        "--deleted-action-maps",
        type=int,
        default=d.n_deleted_action_maps,
        help="extra maps present in aggregates but no longer listed",
    )
    journey.add_argument(
        "--legacy-media-type",
        default=d.legacy_media_type,
        help="media type one old map reports outside the SDK enum; 'none' for no such map",
    )
    journey.add_argument(
        "--max-sync-days",
        type=int,
        default=d.journey_max_sync_days,
        help="longest interval of a sync aggregate query (longer: 400)",
    )
    journey.add_argument(
        "--max-sync-cells",
        type=int,
        default=d.journey_max_sync_cells,
        help="largest sync answer in groups x buckets (larger: 413, use the async jobs)",
    )
    journey.add_argument(
        "--job-delay",
        type=float,
        default=d.journey_job_delay,
        help="seconds from async job submission to FULFILLED",
    )
    journey.add_argument(
        "--job-ttl", type=float, default=d.journey_job_ttl, help="seconds a job's results stay readable"
    )
    journey.add_argument(
        "--max-jobs",
        type=int,
        default=d.journey_max_concurrent_jobs,
        help="running async jobs per client (one more: 429)",
    )

    auth = p.add_argument_group("OAuth clients, tokens and rate limits")
    auth.add_argument(
        "--client",
        action="append",
        type=_client,
        default=None,
        help="id:secret[:scope,scope] (repeatable; replaces the default clients; no scopes: the read "
        "scopes; permissions: both journey permissions unless --permissions says otherwise)",
    )
    auth.add_argument(
        "--permissions",
        action="append",
        type=_permissions,
        default=None,
        metavar="ID=PERM[,PERM]",
        help="set one client's Genesys permissions (repeatable; 'ID=' for none)",
    )
    auth.add_argument("--token-lifetime", type=float, default=d.token_lifetime, help="token lifetime, seconds")
    auth.add_argument("--client-limit", type=int, default=d.client_limit, help="requests per window per client")
    auth.add_argument("--org-limit", type=int, default=d.org_limit, help="requests per window for all clients")
    auth.add_argument(
        "--write-limit-divisor",
        type=int,
        default=d.write_limit_divisor,
        help="a token holding a write scope gets client-limit // this",
    )
    auth.add_argument("--window", type=float, default=d.window_seconds, help="rate-limit window, seconds")

    faults = p.add_argument_group("random transport faults (any API path)")
    faults.add_argument(
        "--fault-rate", type=float, default=d.fault_rate, help="probability that a request gets a random fault"
    )
    faults.add_argument(
        "--fault-kinds",
        type=_kinds,
        default=",".join(d.fault_kinds),  # a string default goes through type= too
        help="comma list of " + ",".join(FAULT_KINDS),
    )
    faults.add_argument("--fault-seed", type=int, default=None, help="seed of the fault RNG (default: --seed)")
    faults.add_argument("--slow-seconds", type=float, default=d.slow_seconds, help="how long a 'slow' fault stalls")

    clock = p.add_argument_group("business clock")
    clock.add_argument("--now", default=None, help="freeze the clock at this ISO date-time (e.g. 2024-02-01T00:00Z)")
    clock.add_argument("--clock-offset", type=float, default=0.0, help="seconds added to real UTC")
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Turn parsed arguments into a SimulatorConfig (ValueError on an inconsistent set)."""
    kwargs: dict[str, object] = {}
    clients = list(args.client) if args.client else default_clients()
    if args.permissions:
        by_id = {c.client_id: c for c in clients}
        for client_id, perms in args.permissions:
            if client_id not in by_id:
                raise ValueError(f"--permissions names an unknown client {client_id!r}")
            by_id[client_id] = replace(by_id[client_id], permissions=perms)
        clients = [by_id[c.client_id] for c in clients]
    if args.client or args.permissions:
        kwargs["clients"] = clients
    legacy = None if str(args.legacy_media_type).lower() in ("", "none") else args.legacy_media_type
    frozen = datetime.fromisoformat(args.now.replace("z", "Z")) if args.now else None
    return SimulatorConfig(
        seed=args.seed,
        n_campaigns=args.campaigns,
        n_scorecards=args.scorecards,
        big_campaign_steps=args.big_steps,
        latency=args.latency,
        client_limit=args.client_limit,
        org_limit=args.org_limit,
        write_limit_divisor=args.write_limit_divisor,
        window_seconds=args.window,
        token_lifetime=args.token_lifetime,
        fault_rate=args.fault_rate,
        fault_kinds=args.fault_kinds,
        fault_seed=args.fault_seed,
        slow_seconds=args.slow_seconds,
        frozen_now=frozen,
        clock_offset=timedelta(seconds=args.clock_offset),
        request_log_path=args.log_file,
        n_action_maps=args.action_maps,
        n_deleted_action_maps=args.deleted_action_maps,
        legacy_media_type=legacy,
        journey_max_sync_days=args.max_sync_days,
        journey_max_sync_cells=args.max_sync_cells,
        journey_job_delay=args.job_delay,
        journey_job_ttl=args.job_ttl,
        journey_max_concurrent_jobs=args.max_jobs,
        **kwargs,  # type: ignore[arg-type]
    )


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"pe-simulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sim = SimulatorServer(config, host=args.host, port=args.port).start()
    try:
        print(f"pe-simulator listening on {sim.url}", flush=True)
        print(f"pe-simulator client {sim.client_id} roles {sim.roles}", flush=True)
        print(f"pe-simulator action-map roles {sim.action_map_roles}", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        sim.stop()
    print("pe-simulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
