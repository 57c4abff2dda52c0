"""The Dagster UI on the embedded defaults: simulator on loopback -> landing folder -> DuckDB.

``python -m pe_dev.ui [--port 3000] [--data-dir .pe_data]`` starts the API simulator in this
process on a free loopback port, points pe_assets at it (the ``GENESYSCLOUD_*`` variables, as
``pe_dev.demo`` does), keeps a persistent Dagster instance in ``<data dir>/dagster_home`` and
runs ``dg dev`` (webserver and daemon for the ``[tool.dg]`` project in pyproject.toml) on
127.0.0.1. Open the printed URL, pick a partition of any asset and click Materialize. Ctrl-C stops
Dagster, then the simulator.

Settings already in the environment win, so the same command can serve a real org's code location
(the simulator still starts, but nothing points at it). Without the development dependencies
(no ``dg``), it falls back to ``dagster dev -w workspace.yaml``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from pe_dev.demo import DEMO_REQUESTS_PER_MINUTE, DEMO_SIMULATOR_LIMIT
from pe_dev.simulator import SimulatorConfig, SimulatorServer

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_ROOT / "workspace.yaml"
# Ctrl-C's orderly shutdown takes a second or two; then SIGTERM, then SIGKILL.
STOP_TIMEOUT_SECONDS = 30.0
TERM_TIMEOUT_SECONDS = 10.0
KILL_TIMEOUT_SECONDS = 5.0

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

# Dagster's notes on the maturity of its own API (Beta, Preview, Superseded) address pe_assets'
# authors, not the person clicking Materialize. PYTHONWARNINGS cannot name these categories: it is
# parsed before site-packages is on sys.path ("Invalid -W option ignored: invalid module name").
# So every Python process of `dg dev` (webserver, daemon, code servers, run workers: all inherit
# PYTHONPATH) runs this sitecustomize, which ignores exactly these three categories.
SITECUSTOMIZE = '''\
"""Written by pe_dev.ui: ignore Dagster's Beta/Preview/Supersession warnings, nothing else."""

import importlib.machinery
import importlib.util
import os
import sys
import warnings

try:
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning, SupersessionWarning
except ImportError:  # not a Dagster environment: nothing to filter
    pass
else:
    for _category in (BetaWarning, PreviewWarning, SupersessionWarning):
        warnings.filterwarnings("ignore", category=_category)

# Shadowing must not disable a sitecustomize the interpreter already has (Debian's, for one).
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
)
if _spec is not None and _spec.loader is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
'''


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


def dev_command(port: int, host: str = HOST) -> list[str]:
    """``dg dev`` on the [tool.dg] project (run from the repository root); else ``dagster dev -w``."""
    dg = Path(sys.executable).with_name("dg")
    if dg.exists():
        return [str(dg), "dev", "-h", host, "-p", str(port)]
    # dg comes with the dev dependencies; the workspace file serves the same code location.
    return [sys.executable, "-m", "dagster", "dev", "-w", str(WORKSPACE), "-h", host, "-p", str(port)]


def write_warning_filter(directory: Path) -> Path:
    """``directory/sitecustomize.py`` (see ``SITECUSTOMIZE``); returns the directory for PYTHONPATH."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory


def child_environment(filter_dir: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of ``dg dev``: the warning filter first on PYTHONPATH, and this venv named."""
    env = dict(os.environ if environ is None else environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(filter_dir), env.get("PYTHONPATH", "")) if p)
    if sys.prefix != sys.base_prefix:
        # dg warns when $VIRTUAL_ENV is not the project's .venv; we do run in a venv, so name it.
        env.setdefault("VIRTUAL_ENV", sys.prefix)
    return env


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` still has a process that is not a zombie."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True  # no /proc (macOS): count zombies as alive; init reaps them soon
    # Orphans are reaped by init, which in a container may never happen: zombies hold no port.
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


def _wait_for_group(process: subprocess.Popen[bytes], pgid: int, seconds: float) -> bool:
    """Reap ``process`` and wait up to ``seconds`` for its group to be gone; True if it is."""
    deadline = time.monotonic() + seconds
    while True:
        process.poll()  # an unreaped leader is a zombie that keeps the group alive
        if not _group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop(
    process: subprocess.Popen[bytes],
    timeout: float = STOP_TIMEOUT_SECONDS,
    term_timeout: float = TERM_TIMEOUT_SECONDS,
    kill_timeout: float = KILL_TIMEOUT_SECONDS,
) -> int:
    """Stop ``process`` and every process of its group; return its exit code.

    ``process`` must lead its own group (``start_new_session=True``): ``dg dev`` starts the
    webserver, daemon and code servers in that group, and they outlive it if it dies first. The
    group gets SIGINT, as a terminal's Ctrl-C would send it, then SIGTERM, then SIGKILL; this
    returns once no process of the group is left (or ``kill_timeout`` after SIGKILL).
    """
    pgid = process.pid
    for signum, seconds in (
        (signal.SIGINT, timeout),
        (signal.SIGTERM, term_timeout),
        (signal.SIGKILL, kill_timeout),
    ):
        if _wait_for_group(process, pgid, 0):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signum)
        if _wait_for_group(process, pgid, seconds):
            break
    else:
        print(f"process group {pgid} is still alive after SIGKILL", file=sys.stderr, flush=True)
    return process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=3000, help="the UI's port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--data-dir", default=os.environ.get("PE_DATA_DIR", ".pe_data"))
    parser.add_argument("--seed", type=int, default=7, help="the simulator's data seed")
    args = parser.parse_args(argv)
    # Ctrl-C must stop us even when started from a background job, whose shell ignores SIGINT
    # (Python then installs no KeyboardInterrupt handler, and dg dev would inherit the SIG_IGN).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    data_dir = Path(args.data_dir).resolve()
    os.environ.setdefault("PE_DATA_DIR", str(data_dir))
    os.environ.setdefault("PE_REQUESTS_PER_MINUTE", DEMO_REQUESTS_PER_MINUTE)
    home = prepare_dagster_home(data_dir)
    port = args.port or free_port()

    config = SimulatorConfig(seed=args.seed, client_limit=DEMO_SIMULATOR_LIMIT, org_limit=2 * DEMO_SIMULATOR_LIMIT)
    with (
        SimulatorServer(config, host=HOST, port=0) as sim,
        tempfile.TemporaryDirectory(prefix="pe_dev_ui_") as scratch,
    ):
        point_at_simulator(sim)
        command = dev_command(port)
        env = child_environment(write_warning_filter(Path(scratch)))
        print(f"simulator on {sim.api_url}; data in {data_dir}; DAGSTER_HOME={home}", flush=True)
        print(f"Dagster UI on http://{HOST}:{port}  (Ctrl-C stops it and the simulator)", flush=True)
        # Its own session and process group: Ctrl-C reaches this process only, and stop() signals
        # the whole group, so no webserver, daemon or code server is left holding the port.
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)

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
            stop(process)  # also when dg dev exited by itself: its services may outlive it
            print("stopping the simulator ...", flush=True)


if __name__ == "__main__":
    sys.exit(main())
