"""The Dagster UI on the embedded defaults: simulator on loopback -> landing folder -> DuckDB.

``python -m pe_dev.ui [--port 3000] [--data-dir .pe_data]`` starts the API simulator in this
process on a free loopback port, points pe_assets at it (the ``GENESYSCLOUD_*`` variables, as
``pe_dev.demo`` does), keeps a persistent Dagster instance in ``<data dir>/dagster_home`` and
runs ``dagster dev -w workspace.yaml`` (webserver and daemon) on 127.0.0.1. Open the printed URL,
pick a partition of any asset and click Materialize. Ctrl-C stops Dagster, then the simulator.

Settings already in the environment win, so the same command can serve a real org's code location
(the simulator still starts, but nothing points at it).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from pe_dev.demo import DEMO_REQUESTS_PER_MINUTE, DEMO_SIMULATOR_LIMIT
from pe_dev.simulator import SimulatorConfig, SimulatorServer

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_ROOT / "workspace.yaml"
STOP_TIMEOUT_SECONDS = 30.0

# The instance of ``python -m pe_dev.ui``. Written only when absent or empty (``pe_dev.demo``
# leaves an empty one): edit it freely afterwards.
DAGSTER_YAML = """\
# Written by `python -m pe_dev.ui`; edit freely, it is not overwritten.
telemetry:
  enabled: false
concurrency:
  runs:
    # Runs wait in the queue beyond this; DuckDB writers serialize on the file lock anyway.
    max_concurrent_runs: 2
  pools:
    # raw_campaign_journeys and raw_scorecards are in pool "pe_api": one extraction step at a time
    # across all runs, so concurrent runs do not split the API's per-client rate budget.
    default_limit: 1
"""


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def prepare_dagster_home(data_dir: Path) -> Path:
    """``DAGSTER_HOME`` (from the environment, else ``<data dir>/dagster_home``) with a dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(data_dir / "dagster_home"))).resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or not config.read_text().strip():
        config.write_text(DAGSTER_YAML)
    return home


def point_at_simulator(sim: SimulatorServer) -> None:
    """The ``GENESYSCLOUD_*`` variables for ``sim``, unless the environment already names an org."""
    for name, value in (
        ("GENESYSCLOUD_API_URL", sim.api_url),
        ("GENESYSCLOUD_LOGIN_URL", sim.login_url),
        ("GENESYSCLOUD_OAUTHCLIENT_ID", sim.client_id),
        ("GENESYSCLOUD_OAUTHCLIENT_SECRET", sim.client_secret),
    ):
        os.environ.setdefault(name, value)


def dagster_dev_command(port: int, host: str = HOST) -> list[str]:
    """``dagster dev`` on the workspace file (it must win over any [tool.dagster] block)."""
    dagster = Path(sys.executable).with_name("dagster")
    executable = [str(dagster)] if dagster.exists() else [sys.executable, "-m", "dagster"]
    target = ["-w", str(WORKSPACE)] if WORKSPACE.exists() else ["-m", "pe_assets.definitions"]
    return [*executable, "dev", *target, "-h", host, "-p", str(port)]


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS) -> int:
    """Stop ``dagster dev`` as Ctrl-C would (SIGINT, it stops its own children), then harder."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
        try:
            return process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=3000, help="the UI's port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--data-dir", default=os.environ.get("PE_DATA_DIR", ".pe_data"))
    parser.add_argument("--seed", type=int, default=7, help="the simulator's data seed")
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir).resolve()
    os.environ.setdefault("PE_DATA_DIR", str(data_dir))
    os.environ.setdefault("PE_REQUESTS_PER_MINUTE", DEMO_REQUESTS_PER_MINUTE)
    home = prepare_dagster_home(data_dir)
    port = args.port or free_port()

    config = SimulatorConfig(seed=args.seed, client_limit=DEMO_SIMULATOR_LIMIT, org_limit=2 * DEMO_SIMULATOR_LIMIT)
    with SimulatorServer(config, host=HOST, port=0) as sim:
        point_at_simulator(sim)
        command = dagster_dev_command(port)
        print(f"simulator on {sim.api_url}; data in {data_dir}; DAGSTER_HOME={home}", flush=True)
        print(f"Dagster UI on http://{HOST}:{port}  (Ctrl-C stops it and the simulator)", flush=True)
        # Its own session: Ctrl-C reaches this process only, which forwards one SIGINT (a second
        # one would make dagster dev skip its orderly shutdown).
        process = subprocess.Popen(command, cwd=REPO_ROOT, start_new_session=True)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            while process.poll() is None:
                time.sleep(0.5)
            return process.returncode
        except KeyboardInterrupt:
            print("\nstopping Dagster ...", flush=True)
            return 0 if stop(process) in (0, -signal.SIGINT, 130) else 1
        finally:
            signal.signal(signal.SIGTERM, previous)
            stop(process)
            print("stopping the simulator ...", flush=True)


if __name__ == "__main__":
    sys.exit(main())
