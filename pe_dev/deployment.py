"""A split Dagster deployment on one machine, for tests and benchmarks: the production shape in miniature.

Three separate processes, as on Kubernetes, sharing only a PostgreSQL instance database (the
content of ``deploy/dagster.yaml``) and the pe_assets environment:

* ``dagster code-server start -m pe_assets.definitions``: the code location, over gRPC; run
  workers are started from it (DefaultRunLauncher), so they inherit its environment;
* ``dagster-webserver`` against a workspace.yaml naming that gRPC server: the GraphQL API;
* ``dagster-daemon run``: the run queue, backfills, schedules, run monitoring.

    with SplitDeployment(tmp / "deploy", pg, sim, days_per_run=3) as dep:
        backfill_id = dep.launch_backfill(first, last)
        dep.wait_backfill(backfill_id)

Every process is the leader of its own process group; ``stop`` kills each group (run workers
included), so nothing outlives the deployment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from datetime import date, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from pe_dev.postgres import PostgresServer, free_port
from pe_dev.simulator import SimulatorServer

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTANCE_YAML = REPO_ROOT / "deploy" / "dagster.yaml"
BIN = Path(sys.executable).parent
LOCATION = "pe_assets"
REPOSITORY = "__repository__"
JOB = "pe_daily_job"
#: Run statuses after which a run never changes again.
TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def partition_names(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


class SplitDeployment:
    """Code server, webserver and daemon as separate processes on one PostgreSQL instance database."""

    def __init__(
        self,
        folder: Path,
        pg: PostgresServer,
        sim: SimulatorServer,
        *,
        days_per_run: int | None = None,
        partitions_start: str = "2024-01-01",
        requests_per_minute: int = 6000,
        extra_env: Mapping[str, str] | None = None,
        backfill_loop_seconds: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.home = self.folder / "dagster_home"
        self.data_dir = self.folder / "pe_data"
        self.logs = self.folder / "logs"
        self.pg = pg
        self.code_port = free_port()
        self.web_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._instance: Any = None
        self.backfill_loop_seconds = backfill_loop_seconds
        # What pe_assets and Dagster read, identical for all three processes: in production these are
        # the pods' environment (the password from a Secret).
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_USERNAME": pg.dsn_parts["username"],
            # The throwaway server trusts loopback: any password works, but the variable must be set.
            "DAGSTER_PG_PASSWORD": "unused-trust-auth",
            "DAGSTER_PG_HOST": pg.dsn_parts["hostname"],
            "DAGSTER_PG_PORT": pg.dsn_parts["port"],
            "DAGSTER_PG_DB": pg.dsn_parts["db_name"],
            "PE_DATA_DIR": str(self.data_dir),
            "PE_PARTITIONS_START": partitions_start,
            "GENESYSCLOUD_API_URL": sim.api_url,
            "GENESYSCLOUD_LOGIN_URL": sim.login_url,
            "GENESYSCLOUD_OAUTHCLIENT_ID": sim.client_id,
            "GENESYSCLOUD_OAUTHCLIENT_SECRET": sim.client_secret,
            "PE_REQUESTS_PER_MINUTE": str(requests_per_minute),
            # Same max_retries as production; a step retry waits a fraction of a second, not 30 s.
            "PE_STEP_RETRY_DELAY_SECONDS": "0.2",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.env.pop("PE_BACKFILL_DAYS_PER_RUN", None)
        if days_per_run:
            self.env["PE_BACKFILL_DAYS_PER_RUN"] = str(days_per_run)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> SplitDeployment:
        """Write DAGSTER_HOME and workspace.yaml, start the three processes, wait until all are ready."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(INSTANCE_YAML, self.home / "dagster.yaml")  # the shipped file, unchanged
        workspace = self.folder / "workspace.yaml"
        workspace.write_text(
            "load_from:\n"
            "  - grpc_server:\n"
            "      host: 127.0.0.1\n"
            f"      port: {self.code_port}\n"
            f"      location_name: {LOCATION}\n"
        )
        self._spawn(
            "code-server",
            [
                *(str(BIN / "dagster"), "code-server", "start", "-m", "pe_assets.definitions"),
                *("-h", "127.0.0.1", "-p", str(self.code_port), "--location-name", LOCATION),
            ],
        )
        # Webserver and daemon start while the code server loads: they retry the gRPC server.
        self._spawn(
            "webserver",
            [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.web_port), "-w", str(workspace)],
        )
        self.start_daemon()
        wait_until(self._location_loaded, timeout, "the webserver to load the code location")
        self.wait_daemon(timeout)
        return self

    def start_daemon(self) -> None:
        args = ["run", "-w", str(self.folder / "workspace.yaml")]
        if self.backfill_loop_seconds is None:
            self._spawn("daemon", [str(BIN / "dagster-daemon"), *args])
            return
        # The backfill daemon looks at its backfills every 30 s, a constant Dagster 1.13 offers no
        # setting for: tests shorten it (the same dagster-daemon entry point, the constant patched
        # first) so a backfill does not spend most of its time waiting for the next look.
        patch = (
            "import sys, dagster._daemon.controller as c; "
            f"c.DEFAULT_DAEMON_INTERVAL_SECONDS = {int(self.backfill_loop_seconds)}; "
            "from dagster._daemon.cli import main; "
            f"sys.argv = ['dagster-daemon', *{args!r}]; sys.exit(main())"
        )
        self._spawn("daemon", [sys.executable, "-c", patch])

    def wait_daemon(self, timeout: float = 120.0) -> None:
        """Wait for a BACKFILL heartbeat newer than the daemon process (a restarted daemon included)."""
        since = time.time()
        proc = self.processes["daemon"]

        def beating() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster-daemon exited ({proc.returncode}); see {self.logs / 'daemon.log'}")
            beats = self.instance().get_daemon_heartbeats()
            beat = beats.get("BACKFILL")
            return beat is not None and beat.timestamp >= since - 5

        wait_until(beating, timeout, "a daemon heartbeat", interval=0.5)

    def kill_daemon(self) -> None:
        """SIGKILL the daemon's whole process group: no shutdown code runs."""
        self._kill("daemon", signal.SIGKILL)

    def stop(self) -> None:
        """Kill every process group (the code server's holds the run workers it started)."""
        for name in list(self.processes):
            self._kill(name, signal.SIGTERM)
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None

    def __enter__(self) -> SplitDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        try:
            self.processes[name] = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()

    def _kill(self, name: str, sig: signal.Signals) -> None:
        proc = self.processes.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        # Grandchildren that escaped a SIGTERM'd parent (run workers) are still in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    # -- the instance database, as the test process sees it ----------------------------------------
    def instance(self) -> Any:
        """The deployment's DagsterInstance as the test process sees it (DAGSTER_HOME, PG variables
        resolved once): made on first use, kept until ``stop``."""
        if self._instance is None:
            import dagster as dg

            keys = [k for k in self.env if k.startswith("DAGSTER_PG_")]
            saved = {k: os.environ.get(k) for k in keys}
            os.environ.update({k: self.env[k] for k in keys})
            try:
                self._instance = dg.DagsterInstance.from_config(str(self.home))
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        return self._instance

    # -- the webserver's GraphQL API -------------------------------------------------------------
    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 60.0) -> Any:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def wait_webserver_answers(self, timeout: float = 60.0, in_a_row: int = 20) -> int:
        """Poll a read-only query until ``in_a_row`` answers succeed in a row; how many failed.

        After a database restart the webserver's pooled connections are dead (its SQLAlchemy pool
        does not ping before use): each answers one request with HTTP 500 before it is replaced,
        and the pool hands them out in turn, so one good answer does not mean the next is.
        """
        failures, streak = 0, 0

        def answers() -> bool:
            nonlocal failures, streak
            try:
                self.graphql("{ runsOrError(limit: 1) { __typename } }", timeout=10)
                streak += 1
            except (urllib.error.URLError, RuntimeError, OSError):
                failures, streak = failures + 1, 0
            return streak >= in_a_row

        wait_until(answers, timeout, "the webserver to answer", interval=0.05)
        return failures

    def _location_loaded(self) -> bool:
        proc = self.processes.get("code-server")
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"code server exited ({proc.returncode}); see {self.logs / 'code-server.log'}")
        try:
            data = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
                " locationOrLoadError { __typename } } } } }",
                timeout=5,
            )
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False
        entries = data["workspaceOrError"].get("locationEntries", [])
        return any(
            e["name"] == LOCATION
            and e["loadStatus"] == "LOADED"
            and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in entries
        )

    @property
    def repository_selector(self) -> dict[str, str]:
        return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}

    def launch_backfill(self, first: date, last: date) -> str:
        """A partition backfill of ``pe_daily_job`` over [first, last], as the UI's Launch backfill does."""
        data = self.graphql(
            """mutation($params: LaunchBackfillParams!) {
              launchPartitionBackfill(backfillParams: $params) {
                __typename
                ... on LaunchBackfillSuccess { backfillId }
                ... on PythonError { message stack }
                ... on InvalidSubsetError { message }
                ... on UnauthorizedError { message }
              }
            }""",
            {
                "params": {
                    "selector": {
                        "partitionSetName": f"{JOB}_partition_set",
                        "repositorySelector": self.repository_selector,
                    },
                    "partitionNames": partition_names(first, last),
                    "fromFailure": False,
                }
            },
        )["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {data}")
        return str(data["backfillId"])

    def schedule_dry_run(self, schedule: str, timestamp: float) -> list[dict[str, str]]:
        """Evaluate ``schedule`` in the code server as at ``timestamp``: its run requests' tags."""
        data = self.graphql(
            """mutation($selector: ScheduleSelector!, $timestamp: Float) {
              scheduleDryRun(selectorData: $selector, timestamp: $timestamp) {
                __typename
                ... on DryRunInstigationTick {
                  evaluationResult { skipReason error { message } runRequests { runKey tags { key value } } }
                }
                ... on PythonError { message stack }
              }
            }""",
            {"selector": {**self.repository_selector, "scheduleName": schedule}, "timestamp": timestamp},
        )["scheduleDryRun"]
        if data["__typename"] != "DryRunInstigationTick":
            raise RuntimeError(f"schedule not evaluated: {data}")
        result = data["evaluationResult"]
        if result["error"]:
            raise RuntimeError(f"schedule raised: {result['error']['message']}")
        return [{t["key"]: t["value"] for t in req["tags"]} for req in result["runRequests"]]

    def launch_run(self, tags: Mapping[str, str]) -> str:
        """Submit a ``pe_daily_job`` run with ``tags`` (range tags make it a ranged run); it is QUEUED."""
        data = self.graphql(
            """mutation($params: ExecutionParams!) {
              launchRun(executionParams: $params) {
                __typename
                ... on LaunchRunSuccess { run { runId status } }
                ... on PythonError { message stack }
                ... on RunConfigValidationInvalid { errors { message } }
                ... on InvalidSubsetError { message }
              }
            }""",
            {
                "params": {
                    "selector": {**self.repository_selector, "jobName": JOB},
                    "runConfigData": {},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
                }
            },
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"run not launched: {data}")
        return str(data["run"]["runId"])

    # -- waiting on the instance database --------------------------------------------------------
    def backfill_runs(self, backfill_id: str) -> list[Any]:
        import dagster as dg
        from dagster._core.storage.dagster_run import DagsterRun

        return list(self.instance().get_runs(dg.RunsFilter(tags=DagsterRun.tags_for_backfill_id(backfill_id))))

    def backfill_status(self, backfill_id: str) -> str:
        backfill = self.instance().get_backfill(backfill_id)
        return backfill.status.value if backfill else "MISSING"

    def wait_backfill(self, backfill_id: str, timeout: float) -> str:
        """Wait until the daemon has finished the backfill (every run terminal); its final status."""
        done = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
        what = f"backfill {backfill_id}"
        return _wait_for_status(lambda: self.backfill_status(backfill_id), done, timeout, what, 1.0)

    def run_status(self, run_id: str) -> str:
        run = self.instance().get_run_by_id(run_id)
        return run.status.value if run else "MISSING"

    def wait_run(self, run_id: str, timeout: float) -> str:
        return _wait_for_status(lambda: self.run_status(run_id), TERMINAL, timeout, f"run {run_id}", 0.5)

    def tail(self, name: str, chars: int = 4000) -> str:
        """The end of a process's log, for assertion messages."""
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _wait_for_status(
    status_of: Callable[[], str], done: Collection[str], timeout: float, what: str, interval: float
) -> str:
    """Poll ``status_of`` until it answers one of ``done``; that status."""
    return str(wait_until(lambda: (status := status_of()) in done and status, timeout, what, interval=interval))
