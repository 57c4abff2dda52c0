"""The deployment files agree with the code: deploy/Dockerfile, deploy/helm/values.yaml (the official
Dagster chart's values), the Secret keys deploy/README.md tells the operator to create, and the
limits of deploy/dagster.yaml.

No container runtime, helm or cluster is needed: the Dockerfile's CMD is run as a local process, and
the chart's environment is fed to the code's own settings parser.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pe_assets import config
from pe_assets.config import CLIENT_ID_VAR, CLIENT_SECRET_VAR, Settings
from pe_assets.defs.common.tables import API_POOL
from pe_dev.pipeline import TODAY, project_defs
from pe_dev.postgres import free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
VALUES = DEPLOY / "helm" / "values.yaml"
README = DEPLOY / "README.md"
INSTANCE = DEPLOY / "dagster.yaml"
MODULE = "pe_assets.definitions"
DEPLOYMENT = "pe-assets"
SECRET = "pe-assets-secrets"

# Variables whose values are secrets: they may only come from a Kubernetes Secret.
SECRET_VARS = {
    CLIENT_ID_VAR,
    CLIENT_SECRET_VAR,
    *config.SNOWFLAKE_CREDENTIAL_VARS.values(),
    config.SNOWFLAKE_KEY_PASSWORD_VAR,
    "SNOWFLAKE_ACCOUNT",
    "SNOWFLAKE_USER",
    config.BUDGET_PASSWORD_VAR,
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "DAGSTER_PG_PASSWORD",
}


# --- Reading the files ---------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in joined]


def _dockerfile(instruction: str) -> list[str]:
    return [args for name, args in _instructions() if name == instruction]


def _cmd() -> list[str]:
    [cmd] = _dockerfile("CMD")
    parsed = json.loads(cmd)  # exec form: no shell between Kubernetes' signals and the server
    assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed)
    return parsed


def _values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def _deployment() -> dict[str, Any]:
    user = _values()["dagster-user-deployments"]
    assert user["enabled"] and user["enableSubchart"]
    [deployment] = [d for d in user["deployments"] if d["name"] == DEPLOYMENT]
    return deployment


def _plain_env() -> dict[str, str]:
    """The user deployment's ``env`` (the chart takes a list of EnvVars or a mapping)."""
    env = _deployment().get("env") or []
    if isinstance(env, dict):
        return {name: str(value) for name, value in env.items()}
    out = {}
    for item in env:
        assert set(item) <= {"name", "value"}, f"{item['name']}: only plain values here; secrets go in envSecrets"
        out[item["name"]] = str(item["value"])
    return out


def _secrets_in_readme() -> dict[str, dict[str, str]]:
    """``kubectl create secret generic NAME --from-literal=KEY=VALUE ...`` commands of the README."""
    text = README.read_text().replace("\\\n", " ")
    secrets: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if line.strip().startswith("kubectl create secret generic"):
            words = shlex.split(line)
            literals = [w.removeprefix("--from-literal=") for w in words if w.startswith("--from-literal=")]
            secrets[words[4]] = dict(literal.split("=", 1) for literal in literals)
    return secrets


def _secret_keys() -> set[str]:
    names = [s["name"] for s in _deployment().get("envSecrets") or []]
    assert names == [SECRET]
    return set(_secrets_in_readme()[SECRET])


def _names_config_reads() -> set[str]:
    """Every upper-case string literal of pe_assets/config.py: the variables it reads."""
    return set(re.findall(r'"([A-Z][A-Z0-9_]+)"', Path(config.__file__).read_text()))


def _allowed(name: str) -> bool:
    numbered_client = re.fullmatch(rf"({CLIENT_ID_VAR}|{CLIENT_SECRET_VAR})_[2-{config.MAX_OAUTH_CLIENTS}]", name)
    return name in _names_config_reads() or name.startswith(("AWS_", "DAGSTER_")) or bool(numbered_client)


# --- Module and port -----------------------------------------------------------------------------


def test_the_image_is_the_locked_project_with_the_deploy_extra():
    assert _dockerfile("FROM") == ["python:3.11-slim"]
    installs = [run for run in _dockerfile("RUN") if "pip install" in run]
    assert len(installs) == 1
    assert re.search(r"-c \S*requirements-lock\.txt", installs[0]) and "[deploy]" in installs[0]
    # The chart passes the server command as the container's args: an ENTRYPOINT would prefix it.
    assert not _dockerfile("ENTRYPOINT")
    assert "USER" in {name for name, _ in _instructions()}, "the server runs as root"


def test_the_module_is_pe_assets_definitions_in_the_image_and_the_chart():
    cmd = _cmd()
    assert cmd[:3] == ["dagster", "api", "grpc"] and cmd[cmd.index("-m") + 1] == MODULE
    args = _deployment()["dagsterApiGrpcArgs"]
    assert args[args.index("-m") + 1] == MODULE
    module = importlib.import_module(MODULE)
    assert callable(module.defs) and callable(module.code_location)


def test_the_port_is_one_number_everywhere():
    [exposed] = _dockerfile("EXPOSE")
    cmd = _cmd()
    port = _deployment()["port"]
    assert isinstance(port, int) and exposed == str(port) == cmd[cmd.index("-p") + 1]
    # The chart runs exactly `dagster api grpc -h 0.0.0.0 -p <port> <dagsterApiGrpcArgs>`:
    # the image's own CMD is that same command, so `docker run` and Kubernetes serve alike.
    chart_command = ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(port), *_deployment()["dagsterApiGrpcArgs"]]
    assert cmd == chart_command


# --- Environment ---------------------------------------------------------------------------------


def test_every_variable_the_chart_sets_is_one_the_code_reads():
    plain, secret = set(_plain_env()), _secret_keys()
    assert not plain & secret, f"set both plainly and from the Secret: {sorted(plain & secret)}"
    unknown = sorted(name for name in plain | secret if not _allowed(name))
    assert not unknown, f"set by the chart but read by nothing (typo?): {unknown}"
    image_env = {part.split("=", 1)[0] for env in _dockerfile("ENV") for part in shlex.split(env)}
    assert all(_allowed(n) or n.startswith(("PYTHON", "PIP_")) for n in image_env), image_env


def test_the_required_oauth_client_comes_from_the_secret_and_secrets_only_from_secrets():
    assert {CLIENT_ID_VAR, CLIENT_SECRET_VAR} <= _secret_keys()
    assert not SECRET_VARS & set(_plain_env()), "a secret variable has its value in values.yaml"
    assert not [n for n in _secret_keys() if n not in SECRET_VARS], "a plain setting hidden in the Secret"


def test_the_charts_settings_load_the_code_location():
    # What a pod sees: the plain env and the Secret's keys (placeholder values). The code's own
    # parser accepts them, and the definitions build from them (nothing connects at load time).
    env = {**_plain_env(), **{name: "placeholder" for name in _secret_keys()}}
    settings = Settings.from_env(env, today=TODAY)
    assert settings.landing_url.startswith("s3://") and settings.warehouse == "snowflake"
    assert settings.budget_url and settings.budget_password_var and settings.backfill_days_per_run
    from pe_assets.definitions import code_location

    assert code_location(settings).get_repository_def().get_all_jobs()  # resolves without error


def test_no_secret_value_is_written_in_the_files():
    values = _values()
    assert values["generatePostgresqlPasswordSecret"] is False and not values["postgresql"]["postgresqlPassword"]
    assert values["global"]["postgresqlSecretName"] in _secrets_in_readme()
    for name, literals in _secrets_in_readme().items():
        for key, value in literals.items():
            assert re.fullmatch(r"<[^<>]+>", value), f"{name}/{key}: the README shows a value, not a placeholder"
    for name, args in _instructions():
        if name in ("ENV", "ARG"):
            assert not SECRET_VARS & set(re.findall(r"[A-Z][A-Z0-9_]+", args)), args
    text = "\n".join(p.read_text() for p in (DOCKERFILE, VALUES, README))
    for pattern in (r"AKIA[0-9A-Z]{16}", r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"://[^/\s:@]+:[^/\s@]+@"):
        assert not re.search(pattern, text), pattern


# --- Limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["predictive-engagement", "journey-aggregates"])
def test_pe_api_is_the_only_pool_so_the_default_limit_is_its_limit(source):
    from pe_dev.pipeline import settings_for_tests

    defs = project_defs(settings=settings_for_tests(PE_SOURCE=source))
    pools = {a.op.pool for a in defs.assets or [] if getattr(a, "op", None) is not None} - {None}
    assert pools == {API_POOL} == {"pe_api"}


def test_the_run_queue_and_pool_limits_agree_with_deploy_dagster_yaml():
    if not INSTANCE.exists():
        pytest.skip("deploy/dagster.yaml is not written yet: the limits are checked against it once it is")
    instance = yaml.safe_load(INSTANCE.read_text())
    values = _values()
    assert instance["run_coordinator"]["class"] == values["dagsterDaemon"]["runCoordinator"]["type"]
    assert values["dagsterDaemon"]["enabled"] and values["dagsterDaemon"]["runCoordinator"]["enabled"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    concurrency = values["concurrency"]
    assert concurrency["enabled"]
    assert concurrency["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert concurrency["pools"]["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]
    assert concurrency["pools"].get("granularity") == instance["concurrency"]["pools"].get("granularity")
    # The chart refuses a run limit set both here and on the queued run coordinator.
    assert "maxConcurrentRuns" not in (
        values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"] or {}
    )
    monitoring, instance_monitoring = values["dagsterDaemon"]["runMonitoring"], instance.get("run_monitoring", {})
    assert monitoring["enabled"] == instance_monitoring.get("enabled", False)
    assert monitoring.get("startTimeoutSeconds") == instance_monitoring.get("start_timeout_seconds")
    assert monitoring.get("freeSlotsAfterRunEndSeconds") == instance_monitoring.get("free_slots_after_run_end_seconds")


# --- The image's command, run here ---------------------------------------------------------------


def test_the_dockerfile_command_serves_the_code_location(tmp_path):
    """The CMD as a local process (the port swapped for a free one): the gRPC server loads the
    module, with the chart's settings, and answers Dagster's own health check."""
    port = free_port()
    cmd = _cmd()
    cmd[cmd.index("-p") + 1] = str(port)
    cmd[cmd.index("-h") + 1] = "127.0.0.1"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PE_", "GENESYSCLOUD_", "SNOWFLAKE_", "AWS_"))}
    env.update(_plain_env())
    env.update({name: "placeholder" for name in _secret_keys()})
    env.update(PE_DATA_DIR=str(tmp_path / "data"), DAGSTER_HOME=str(tmp_path))
    bin_dir = Path(sys.executable).parent
    log = tmp_path / "server.log"
    with open(log, "w") as output:  # a file, not a pipe: a full pipe would stall the server
        server = subprocess.Popen(
            [str(bin_dir / cmd[0]), *cmd[1:]],
            cwd=tmp_path,  # the image's WORKDIR holds no source: the installed package is what loads
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
            check = subprocess.run(
                [str(bin_dir / "dagster"), "api", "grpc-health-check", "-p", str(port), "-h", "127.0.0.1"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if check.returncode == 0:
                break
            assert time.monotonic() < deadline, check.stdout + check.stderr
            time.sleep(1)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
