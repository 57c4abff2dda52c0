"""Secret hygiene: a real CLI materialization leaves the client secret and the tokens nowhere.

``dagster asset materialize -m pe_assets.definitions --select '*' --partition D`` runs in a
subprocess with a temporary DAGSTER_HOME (SQLite run/event storage, compute logs on disk) and the
settings in environment variables, against a simulator whose OAuth client has a recognisable
secret. Then every byte it produced is scanned: its stdout and stderr, every file under
DAGSTER_HOME (event log, run storage, compute logs), the landing zone, the DuckDB file and the
rate-budget file. Needles: the secret, its base64 Basic-auth form, and every access token the
simulator issued (the simulator keeps them in ``SimulatorServer._tokens``, keyed by token).
Both API sources are scanned (PE_SOURCE). A run with a wrong secret (401 at the token endpoint) is
scanned the same way.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pe_dev.chaos import REPO_ROOT, child_env
from pe_dev.simulator import ClientSpec, SimulatorConfig, SimulatorServer

CLIENT_ID = "pe-hygiene-client"
SECRET = "S3CRET-canary-7f1c2e9a-do-not-log"
WRONG_SECRET = "WR0NG-canary-55aa01-do-not-log"
DAY = "2024-03-05"


@pytest.fixture
def sim():
    config = SimulatorConfig(
        seed=17,
        n_campaigns=5,
        big_campaign_steps=1100,
        client_limit=100_000,
        org_limit=100_000,
        clients=[ClientSpec(CLIENT_ID, SECRET)],
    )
    with SimulatorServer(config, host="127.0.0.1", port=0) as server:
        yield server


def _cli(
    sim: SimulatorServer,
    tmp: Path,
    secret: str,
    source: str = "predictive-engagement",
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    home = tmp / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GENESYSCLOUD_", "PE_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": str(REPO_ROOT),
        "GENESYSCLOUD_API_URL": sim.api_url,
        "GENESYSCLOUD_LOGIN_URL": sim.login_url,
        "GENESYSCLOUD_OAUTHCLIENT_ID": CLIENT_ID,
        "GENESYSCLOUD_OAUTHCLIENT_SECRET": secret,
        "PE_DATA_DIR": str(tmp / "data"),
        "PE_PARTITIONS_START": "2024-01-01",
        "PE_REQUESTS_PER_MINUTE": "1000",
        "PE_SOURCE": source,
        **(extra_env or {}),
    }
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "asset", "materialize", "-m", "pe_assets.definitions", "--select", "*", "--partition", DAY]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, timeout=180)


def _needles(sim: SimulatorServer, secret: str) -> dict[str, bytes]:
    needles = {
        "client secret": secret.encode(),
        "Basic credentials": base64.b64encode(f"{CLIENT_ID}:{secret}".encode()),
    }
    for n, token in enumerate(sim._tokens):  # every access token the simulator issued
        needles[f"access token #{n}"] = token.encode()
    return needles


def _scan(roots: list[Path], blobs: dict[str, bytes], needles: dict[str, bytes]) -> tuple[list[str], int]:
    """Where any needle occurs (file paths or blob names) and how many files were scanned."""
    hits: list[str] = []
    files = 0
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            files += 1
            data = path.read_bytes()
            hits += [f"{what} in {path}" for what, needle in needles.items() if needle in data]
    for name, data in blobs.items():
        hits += [f"{what} in {name}" for what, needle in needles.items() if needle in data]
    return hits, files


@pytest.mark.parametrize("source", ["predictive-engagement", "journey-aggregates"])
def test_a_full_cli_materialization_leaks_neither_secret_nor_tokens(sim, tmp_path, source):
    done = _cli(sim, tmp_path, SECRET, source)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert sim._tokens, "the run never fetched a token"
    data = tmp_path / "data"
    # Everything the run produced exists where we are about to look.
    assert (data / "warehouse.duckdb").is_file() and (data / "state" / "rate_budget.sqlite").is_file()
    assert list((data / "landing").rglob("*.json"))
    home = tmp_path / "dagster_home"
    assert list(home.rglob("*.db")), "no SQLite event log under DAGSTER_HOME"
    assert [p for p in home.rglob("*") if p.suffix in (".out", ".err", ".complete")], "no compute logs captured"
    hits, files = _scan([home, data], {"stdout": done.stdout, "stderr": done.stderr}, _needles(sim, SECRET))
    assert files >= 15
    assert hits == []
    # The run did reach the API with that client (so the scan is not vacuous).
    assert any(r["client_id"] == CLIENT_ID and r["status"] == 200 for r in sim.log_records())


def test_a_run_failing_on_a_wrong_secret_names_the_problem_and_leaks_nothing(sim, tmp_path):
    """Wrong secret: the token endpoint answers 401. The step fails (after the asset's RetryPolicy,
    delay shortened: the CLI would wait 30 + 60 + 120 s) and the run fails; its exception texts, as
    the run printed them, name the problem and the client, never a secret."""
    log = tmp_path / "child.log"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pe_dev.chaos",
            "materialize",
            "--data-dir",
            str(tmp_path / "data"),
            "--first",
            DAY,
            "--last",
            DAY,
        ],
        cwd=REPO_ROOT,
        env=child_env(sim, secret=WRONG_SECRET) | {"PE_CHILD_CLIENT_ID": CLIENT_ID},
        capture_output=True,
        timeout=180,
    )
    log.write_bytes(proc.stdout + proc.stderr)
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert b"RUN_FAILURE" in proc.stdout
    assert b"AuthenticationError" in output and b"token request refused" in output and b"HTTP 401" in output
    assert CLIENT_ID.encode() in proc.stdout  # the error names the client, not its secret
    assert not sim._tokens, "a token was issued for a wrong secret"
    needles = {**_needles(sim, WRONG_SECRET), "right secret": SECRET.encode()}
    hits, files = _scan([tmp_path / "data"], {"output": output}, needles)
    assert files > 0 and hits == []


BUDGET_PASSWORD = "PGPASS-canary-3d9e1b-do-not-log"


def test_the_budget_database_password_stays_out_of_everything(sim, tmp_path, postgres):
    """PE_BUDGET_URL on a real PostgreSQL, its password in PE_BUDGET_PASSWORD: a full CLI run leaves
    the password (and the OAuth secret) in no output, event log, compute log, landing file or table."""
    budget = {"PE_BUDGET_URL": postgres.url, "PE_BUDGET_PASSWORD": BUDGET_PASSWORD}
    done = _cli(sim, tmp_path, SECRET, extra_env=budget)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert not (tmp_path / "data" / "state" / "rate_budget.sqlite").exists()  # the budget lived in PostgreSQL
    needles = {**_needles(sim, SECRET), "budget password": BUDGET_PASSWORD.encode()}
    hits, files = _scan(
        [tmp_path / "dagster_home", tmp_path / "data"], {"stdout": done.stdout, "stderr": done.stderr}, needles
    )
    assert files >= 15
    assert hits == []
