"""Command line: ``python -m pe_dev.simulator --port 8765 --seed 7`` (or ``python3 dev.py simulator ...``).

Prints ``pe-simulator listening on http://HOST:PORT`` once it serves, then runs until SIGINT or
SIGTERM and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime, timedelta
from types import FrameType

from pe_dev.simulator.config import FAULT_KINDS, ClientSpec, SimulatorConfig
from pe_dev.simulator.server import SimulatorServer


def _client(text: str) -> ClientSpec:
    """Parse ``id:secret[:scope1,scope2,...]`` (no scopes -> the two read scopes)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError("expected id:secret[:scope,scope...]")
    if len(parts) == 3 and parts[2]:
        return ClientSpec(parts[0], parts[1], tuple(s for s in parts[2].split(",") if s))
    return ClientSpec(parts[0], parts[1])


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kinds {unknown}; choose from {FAULT_KINDS}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    d = SimulatorConfig()
    p = argparse.ArgumentParser(prog="pe-simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--campaigns", type=int, default=d.n_campaigns)
    p.add_argument("--scorecards", type=int, default=None)
    p.add_argument("--big-steps", type=int, default=d.big_campaign_steps)
    p.add_argument("--latency", type=float, default=d.latency, help="seconds added to every API request")
    p.add_argument("--client-limit", type=int, default=d.client_limit)
    p.add_argument("--org-limit", type=int, default=d.org_limit)
    p.add_argument("--write-limit-divisor", type=int, default=d.write_limit_divisor)
    p.add_argument("--window", type=float, default=d.window_seconds, help="rate-limit window, seconds")
    p.add_argument("--token-lifetime", type=float, default=d.token_lifetime, help="seconds")
    p.add_argument(
        "--client",
        action="append",
        type=_client,
        default=None,
        help="id:secret[:scope,scope] (repeatable; replaces the default clients)",
    )
    p.add_argument("--fault-rate", type=float, default=d.fault_rate)
    p.add_argument("--fault-kinds", type=_kinds, default=d.fault_kinds, help="comma list of " + ",".join(FAULT_KINDS))
    p.add_argument("--fault-seed", type=int, default=None)
    p.add_argument("--slow-seconds", type=float, default=d.slow_seconds)
    p.add_argument("--now", default=None, help="freeze the business clock at this ISO date-time")
    p.add_argument("--clock-offset", type=float, default=0.0, help="seconds added to real UTC")
    p.add_argument("--log-file", default=None, help="append request records as JSON lines")
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Turn parsed arguments into a SimulatorConfig."""
    kwargs: dict[str, object] = {}
    if args.client:
        kwargs["clients"] = list(args.client)
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
        while not stop.wait(0.2):
            pass
    finally:
        sim.stop()
    print("pe-simulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
