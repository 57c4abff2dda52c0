"""Several "hosts" on one machine: Linux network namespaces on a bridge, for multi-host budget tests.

    with NamespaceHosts(3) as hosts:          # needs root and `ip netns` (else NamespaceUnavailable)
        hosts.server_address                  # 10.X.Y.1: the machine's side, where servers listen
        hosts.command(0, ["python", ...])     # argv that runs inside host 0 (10.X.Y.11)

Each namespace has its own loopback and one veth leg on a private bridge; nothing but the bridge's
subnet is reachable from it. The API client accepts plain http only to loopback, so a host reaches
the simulator through a ``TcpRelay`` on its own 127.0.0.1 (standing in for the TLS a real host
would use); the budget's PostgreSQL is reached directly at ``server_address``, with a password.

``python -m pe_dev.netns extract ...`` is what one host runs: a seed-contract extraction (the
campaign listing, then every journey page of the given UTC days) through the real client, sharing
nothing with the other hosts but the PostgreSQL budget. It prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import TracebackType

from pe_dev.postgres import PostgresServer

#: Environment variables a host process reads (secrets travel by environment, never by argv).
SIM_CLIENT_ID_VAR = "PE_SIM_CLIENT_ID"
SIM_CLIENT_SECRET_VAR = "PE_SIM_CLIENT_SECRET"
BUDGET_PASSWORD_VAR = "PE_BUDGET_PASSWORD"


class NamespaceUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no `ip`, no veth/bridge support)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NamespaceUnavailable(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _used_subnets() -> set[str]:
    """The 10.x.y.0/24 prefixes already on this machine (another test run may hold one)."""
    done = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True)
    return {word.rsplit(".", 1)[0] for word in done.stdout.split() if word.startswith("10.")}


class NamespaceHosts:
    """``count`` network namespaces on one bridge; the machine keeps ``server_address``.

    Names carry a random token, so concurrent runs (and other agents) never collide; ``close``
    removes the namespaces, the veth pairs and the bridge.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        token = secrets.token_hex(3)
        self.bridge = f"peb{token}"
        self.names = [f"pe-{token}-{i}" for i in range(count)]
        self._veths = [f"pe{token}v{i}" for i in range(count)]
        used = _used_subnets()
        free = [f"10.{a}.{b}" for a in range(200, 250) for b in range(256) if f"10.{a}.{b}" not in used]
        self.prefix = random.choice(free)
        self.server_address = f"{self.prefix}.1"
        self.subnet = f"{self.prefix}.0/24"
        self.addresses = [f"{self.prefix}.{11 + i}" for i in range(count)]
        self._made: list[tuple[str, str]] = []  # ("netns"|"link", name), undone in reverse

    def start(self) -> NamespaceHosts:
        if os.geteuid() != 0:
            raise NamespaceUnavailable("network namespaces need root")
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made.append(("link", self.bridge))
            _ip("addr", "add", f"{self.server_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for name, veth, address in zip(self.names, self._veths, self.addresses, strict=True):
                _ip("netns", "add", name)
                self._made.append(("netns", name))
                _ip("link", "add", f"{veth}h", "type", "veth", "peer", "name", f"{veth}n")
                self._made.append(("link", f"{veth}h"))
                _ip("link", "set", f"{veth}n", "netns", name)
                _ip("link", "set", f"{veth}h", "master", self.bridge)
                _ip("link", "set", f"{veth}h", "up")
                _ip("netns", "exec", name, "ip", "addr", "add", f"{address}/24", "dev", f"{veth}n")
                _ip("netns", "exec", name, "ip", "link", "set", f"{veth}n", "up")
                _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        except (NamespaceUnavailable, OSError) as exc:
            self.close()
            raise NamespaceUnavailable(str(exc)) from None
        return self

    def command(self, index: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside host ``index``."""
        return ["ip", "netns", "exec", self.names[index], *argv]

    def close(self) -> None:
        while self._made:
            kind, name = self._made.pop()
            args = ["netns", "del", name] if kind == "netns" else ["link", "del", name]
            subprocess.run(["ip", *args], capture_output=True)

    def __enter__(self) -> NamespaceHosts:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def budget_postgres(folder: Path, host: str, *, password: str, clients_subnet: str | None) -> PostgresServer:
    """A started PostgreSQL on ``host`` whose user needs ``password`` from ``clients_subnet``.

    The machine itself (``host``/32) stays trusted so the harness can create the database; the
    hosts of the subnet must authenticate (scram-sha-256), as they would against a real server.
    """
    import psycopg2

    server = PostgresServer(folder, host=host)
    server.init()
    if clients_subnet is not None:
        hba = server.data / "pg_hba.conf"
        # First match wins: the harness's own address first, then the hosts' subnet.
        hba.write_text(f"host all all {host}/32 trust\nhost all all {clients_subnet} scram-sha-256\n" + hba.read_text())
    server.start()
    with contextlib.closing(
        psycopg2.connect(host=host, port=server.port, user="pe", dbname="pe", connect_timeout=5)
    ) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ALTER USER pe PASSWORD %s", (password,))
    return server


# -- what runs inside a host ---------------------------------------------------------------------
class TcpRelay:
    """Forwards connections from ``127.0.0.1:port`` (a free port) to ``target``; daemon threads."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True, name="relay-accept").start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self._listener.accept()
            except OSError:
                return
            try:
                outbound = socket.create_connection(self.target, timeout=10)
            except OSError:
                inbound.close()
                continue
            for sock in (inbound, outbound):
                sock.settimeout(None)
                # Small request/answer exchanges: do not let Nagle hold them back.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(inbound, outbound), daemon=True).start()
            threading.Thread(target=self._pump, args=(outbound, inbound), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()


@dataclass(frozen=True)
class HostFigures:
    """What one host's extraction did (its client's own counters)."""

    requests: int
    rate_limited_429s: int
    pages: int
    budget_wait_seconds: float
    error: str | None = None


def extract(
    api_target: tuple[str, int],
    *,
    client_id: str,
    client_secret: str,
    budget_url: str,
    budget_password: str | None,
    budget_schema: str,
    days: Sequence[date],
    cap: int,
    window: float,
    concurrency: int,
) -> HostFigures:
    """The campaign listing, then every journey page of ``days`` for every live campaign."""
    from pe_assets.client import OAuthCredentials, PostgresBudgetStore, PredictiveEngagementClient

    relay = TcpRelay(api_target)
    local = f"http://127.0.0.1:{relay.port}"
    store = PostgresBudgetStore.from_url(budget_url, password=budget_password, schema=budget_schema)
    error = None
    with PredictiveEngagementClient(
        local,
        local,
        OAuthCredentials(client_id, client_secret),
        requests_per_minute=cap,
        rate_window_seconds=window,
        budget_path=store,
        max_concurrency=concurrency,
    ) as client:
        try:
            live = [c["id"] for c in client.list_campaigns() if c["status"] != "archived"]
            client.map(lambda task: client.get_campaign_journey_pages(*task), [(c, d) for c in live for d in days])
        except Exception as exc:  # reported, not raised: the parent compares every host's figures
            error = f"{type(exc).__name__}: {exc}"
        stats = client.stats
    relay.close()
    return HostFigures(stats.requests, stats.rate_limited_429s, stats.pages, stats.budget_wait_seconds, error)


# -- several hosts, one budget -------------------------------------------------------------------
@dataclass(frozen=True)
class MultiHostRun:
    """Figures of one run of ``run_hosts``, the API requests taken from the simulator's log.

    ``efficiency``: the shortest span the cap allows for that many requests (``ceil(n / cap) - 1``
    whole windows between the first and the last) over the span observed; at most 1.0, since no
    window may hold more than ``cap``. It is the throughput as a fraction of the cap, without the
    first window's burst or a last, partly filled window distorting it.
    """

    hosts: list[HostFigures]
    namespaces: bool
    requests: int
    rate_limited_429s: int
    max_in_window: int
    span_seconds: float
    efficiency: float


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most requests any window ``(t - window, t]`` holds, whatever its alignment."""
    ordered, best, first = sorted(times), 0, 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - window:
            first += 1
        best = max(best, last - first + 1)
    return best


def run_hosts(
    count: int,
    *,
    cap: int,
    window: float,
    days_per_host: int,
    n_campaigns: int = 12,
    concurrency: int = 8,
    namespaces: bool = True,
    postgres: PostgresServer | None = None,
    budget_schema: str = "pe_rate_budget",
    timeout: float = 120.0,
) -> MultiHostRun:
    """``count`` extractions at once, each its own process (in its own network namespace when
    ``namespaces`` and the machine allow it), sharing only a PostgreSQL budget, against one
    simulator whose per-client limit is ``cap`` per ``window``. Each host extracts its own days.

    Without namespaces the hosts are plain processes on loopback, using ``postgres`` (or a
    PostgreSQL of their own) with ``budget_schema``. With namespaces a PostgreSQL with a password
    is started on the bridge (a loopback server is out of the namespaces' reach).
    """
    from datetime import timedelta

    from pe_dev.simulator import SimulatorConfig, SimulatorServer

    # Not under pytest's temporary root: a pytest session starting elsewhere resets that root to
    # 0700, and the server (run as the postgres user) would lose its data folder mid-run.
    scratch = tempfile.TemporaryDirectory(prefix="pe-hosts-")
    folder = Path(scratch.name)
    hosts: NamespaceHosts | None = None
    own_postgres: PostgresServer | None = None
    sim: SimulatorServer | None = None
    processes: list[subprocess.Popen[str]] = []
    password = secrets.token_urlsafe(12)
    try:
        if namespaces:
            hosts = NamespaceHosts(count).start()
            server_address = hosts.server_address
            own_postgres = budget_postgres(
                folder / "budget-pg", server_address, password=password, clients_subnet=hosts.subnet
            )
            budget_url = own_postgres.url
        else:
            server_address = "127.0.0.1"
            if postgres is None:
                own_postgres = PostgresServer(folder / "budget-pg").start()
                postgres = own_postgres
            budget_url = postgres.url
        sim = SimulatorServer(
            SimulatorConfig(n_campaigns=n_campaigns, client_limit=cap, org_limit=cap * 10, window_seconds=window),
            host=server_address,
            port=0,
        ).start()
        last_day = (sim.now() - timedelta(days=1)).date()
        environment = {
            **os.environ,
            SIM_CLIENT_ID_VAR: sim.client_id,
            SIM_CLIENT_SECRET_VAR: sim.client_secret,
            BUDGET_PASSWORD_VAR: password if namespaces else "",
        }
        for index in range(count):
            days = [last_day - timedelta(days=index * days_per_host + i) for i in range(days_per_host)]
            argv = [
                sys.executable,
                "-m",
                "pe_dev.netns",
                "extract",
                f"--api-host={server_address}",
                f"--api-port={sim.port}",
                f"--budget-url={budget_url}",
                f"--budget-schema={budget_schema}",
                f"--days={','.join(d.isoformat() for d in days)}",
                f"--cap={cap}",
                f"--window={window}",
                f"--concurrency={concurrency}",
            ]
            processes.append(
                subprocess.Popen(
                    hosts.command(index, argv) if hosts else argv,
                    env=environment,
                    cwd=Path(__file__).resolve().parent.parent,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        figures = []
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            if process.returncode != 0:
                raise RuntimeError(f"a host failed ({process.returncode}): {err.strip()[-2000:]}")
            figures.append(HostFigures(**json.loads(out.strip().splitlines()[-1])))
        api = [r for r in sim.request_log if r.path != "/oauth/token"]
        times = [r.monotonic for r in api]
        span = max(times) - min(times) if times else 0.0
        ideal = (-(-len(times) // cap) - 1) * window
        return MultiHostRun(
            hosts=figures,
            namespaces=hosts is not None,
            requests=len(api),
            rate_limited_429s=sum(1 for r in api if r.status == 429),
            max_in_window=max_in_window(times, window) if times else 0,
            span_seconds=span,
            efficiency=ideal / span if span > 0 else 1.0,
        )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        # Each step on its own: one failing must not leave the others (a server, a bridge) behind.
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(scratch.cleanup)
            if hosts is not None:
                cleanup.callback(hosts.close)
            if own_postgres is not None:
                cleanup.callback(own_postgres.stop, "immediate")
            if sim is not None:
                cleanup.callback(sim.stop)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pe_dev.netns", description="What one simulated host runs.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("extract", help="one host's extraction; prints its figures as one JSON line")
    run.add_argument("--api-host", required=True, help="the simulator's address as this host sees it")
    run.add_argument("--api-port", type=int, required=True)
    run.add_argument("--budget-url", required=True, help="postgresql://USER@HOST:PORT/DB (password: env)")
    run.add_argument("--budget-schema", default="pe_rate_budget")
    run.add_argument("--days", required=True, help="UTC days, comma-separated YYYY-MM-DD")
    run.add_argument("--cap", type=int, required=True)
    run.add_argument("--window", type=float, required=True)
    run.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    figures = extract(
        (args.api_host, args.api_port),
        client_id=os.environ[SIM_CLIENT_ID_VAR],
        client_secret=os.environ[SIM_CLIENT_SECRET_VAR],
        budget_url=args.budget_url,
        budget_password=os.environ.get(BUDGET_PASSWORD_VAR) or None,
        budget_schema=args.budget_schema,
        days=[date.fromisoformat(d) for d in args.days.split(",")],
        cap=args.cap,
        window=args.window,
        concurrency=args.concurrency,
    )
    print(json.dumps(figures.__dict__), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
