"""The Dagster UI in a real browser: lineage, partitions, and a partition materialized from the UI.

Starts the simulator, then ``dagster-webserver -w workspace.yaml`` (temporary DAGSTER_HOME and
PE_DATA_DIR, the GENESYSCLOUD_* variables pointing at the simulator) and drives Debian's Chromium
headless through Playwright. Saves the lineage screenshot to ``docs/lineage.png`` and the others
under the test's tmp directory. Skipped only when ``/usr/bin/chromium`` is absent
(``apt-get install -y chromium chromium-driver``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pe_dev.pipeline import project_defs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[1]
LOCATION = "pe_assets.definitions"
ASSET = "raw_campaign_journeys"  # the root: one partition materializes without anything upstream
VIEWPORT = {"width": 2200, "height": 1300}  # wide enough for full (not minimal) lineage nodes
SERVER_START_TIMEOUT = 180.0  # ~8-15 s normally; generous for a loaded 2-core machine
RUN_TIMEOUT = 300.0
UI_TIMEOUT_MS = 60_000

pytestmark = [
    # In CI (.ci/run installs Chromium) a missing browser is a failure, never a silent skip.
    pytest.mark.skipif(
        not CHROMIUM.exists() and os.environ.get("CI") != "true",
        reason="/usr/bin/chromium is absent: apt-get install -y chromium chromium-driver",
    ),
    pytest.mark.timeout(900),
]

WORKSPACE_QUERY = """
query { workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
RUNS_QUERY = """
query Runs($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
  __typename ... on Runs { results { runId status } } } }
"""
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _graphql(base: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.post(f"{base}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def _expected_graph() -> dict[str, set[str]]:
    """Every asset of the code location and its direct upstream assets, from the definitions."""
    graph: dict[str, set[str]] = {}
    for definition in project_defs().assets or []:
        for key in definition.keys:
            graph[key.to_user_string()] = {dep.to_user_string() for dep in definition.asset_deps[key]}
    return graph


@pytest.fixture
def webserver(make_simulator, tmp_path) -> Iterator[dict[str, Any]]:
    """dagster-webserver on a free loopback port, its code location loaded; stopped afterwards."""
    sim = make_simulator(client_limit=1000, org_limit=2000)
    home = tmp_path / "dagster_home"
    home.mkdir()
    # No daemon here: runs launched from the UI start at once instead of waiting in a queue.
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    data_dir = tmp_path / "pe_data"
    today = datetime.now(UTC).date()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PE_", "GENESYSCLOUD_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        PE_DATA_DIR=str(data_dir),
        PE_REQUESTS_PER_MINUTE="600",
        PE_PARTITIONS_START=(today - timedelta(days=30)).isoformat(),
        GENESYSCLOUD_API_URL=sim.api_url,
        GENESYSCLOUD_LOGIN_URL=sim.login_url,
        GENESYSCLOUD_OAUTHCLIENT_ID=sim.client_id,
        GENESYSCLOUD_OAUTHCLIENT_SECRET=sim.client_secret,
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    webserver_bin = Path(sys.executable).with_name("dagster-webserver")
    log = (tmp_path / "webserver.log").open("wb")
    process = subprocess.Popen(
        [str(webserver_bin), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopping it also stops the run workers
    )
    try:
        started = time.monotonic()
        status = None
        while time.monotonic() - started < SERVER_START_TIMEOUT:
            assert process.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                data = _graphql(base, WORKSPACE_QUERY)
                [entry] = data["workspaceOrError"]["locationEntries"]
                status = entry["loadStatus"], entry["locationOrLoadError"]
                if entry["loadStatus"] == "LOADED":
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(1)
        else:
            pytest.fail(f"webserver not ready after {SERVER_START_TIMEOUT} s ({status}): see {tmp_path}/webserver.log")
        assert status and status[1]["__typename"] == "RepositoryLocation", status
        print(f"webserver ready in {time.monotonic() - started:.1f} s")
        yield {"base": base, "data_dir": data_dir, "today": today}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        log.close()


def _node_names(page: Any) -> set[str]:
    """Names of the asset (and group) nodes drawn in the current graph."""
    return set(page.locator("foreignObject [data-tooltip]").evaluate_all("els => els.map(e => e.dataset.tooltip)"))


def _wait_for_nodes(page: Any, expected: set[str], timeout: float = 60.0) -> set[str]:
    deadline = time.monotonic() + timeout
    names: set[str] = set()
    while time.monotonic() < deadline:
        names = _node_names(page)
        if expected <= names:
            return names
        page.wait_for_timeout(500)
    return names


def test_lineage_partitions_and_a_partition_materialized_from_the_ui(webserver, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, today = webserver["base"], webserver["today"]
    graph = _expected_graph()
    assert ASSET in graph and len(graph) >= 7
    groups = _asset_groups()
    day = (today - timedelta(days=2)).isoformat()
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user-data dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            context.set_default_timeout(UI_TIMEOUT_MS)
            # Dismiss the one-time "Join the Dagster community" dialog before it appears.
            context.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
            page = context.new_page()

            # 1. The global lineage: with several groups it opens collapsed, one box per group; each
            # group's own lineage page draws all of its assets.
            page.goto(f"{base}/asset-groups")
            assert set(groups) <= _wait_for_nodes(page, set(groups)), "asset groups missing from the global lineage"
            page.screenshot(path=str(shots / "groups.png"))
            for group, members in sorted(groups.items()):
                page.goto(f"{base}/locations/pe_assets.definitions/asset-groups/{group}")
                names = _wait_for_nodes(page, members)
                assert members <= names, f"group {group}: missing from its lineage graph: {sorted(members - names)}"
                page.wait_for_timeout(1000)  # let the edges settle for the picture
                page.screenshot(path=str(shots / f"lineage_{group}.png"))
                if group == "warehouse" and os.environ.get("PE_UPDATE_SCREENSHOTS") == "1":
                    page.screenshot(path=str(REPO / "docs" / "lineage.png"))  # the README's picture, on request

            # 2. Each asset with its upstreams: the asset's own lineage tab, upstream, depth 1.
            for asset, upstream in sorted(graph.items()):
                page.goto(f"{base}/assets/{asset}?view=lineage&lineageScope=upstream&lineageDepth=1")
                shown = _wait_for_nodes(page, {asset, *upstream}, timeout=30) - set(groups)  # group boxes too
                assert shown == {asset, *upstream}, f"{asset}: expected upstreams {sorted(upstream)}, UI shows {shown}"
            page.screenshot(path=str(shots / "upstream_last.png"))

            # 3. A partitioned asset's partitions view; pick one day.
            page.goto(f"{base}/assets/{ASSET}?view=partitions")
            expect(page.get_by_text("Partitions Selected")).to_be_visible()
            page.get_by_placeholder("Filter by name").fill(day)
            page.get_by_text(day, exact=True).first.click()
            expect(page).to_have_url(re.compile(rf"partition={day}"))
            page.screenshot(path=str(shots / "partitions.png"))

            # 4. Materialize that partition from the UI.
            page.locator("button", has_text=re.compile(r"^Materialize")).first.click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text(f"Launch runs to materialize {ASSET}")).to_be_visible()
            selection = dialog.locator("input[type=text], input:not([type])").first
            if selection.input_value() != day:
                selection.fill(day)
                selection.press("Enter")
            expect(selection).to_have_value(day)
            launch = dialog.locator("button", has_text=re.compile(r"^Launch 1 run$"))
            expect(launch).to_be_enabled()
            page.screenshot(path=str(shots / "launch_dialog.png"))
            launch.click()

            # 5. Until the run succeeds (the UI's GraphQL, then the run page).
            run_id, status = _wait_for_run(base, day)
            assert status == "SUCCESS", f"run {run_id} ended {status}"
            page.goto(f"{base}/runs/{run_id}")
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            page.screenshot(path=str(shots / "run.png"))

            page.goto(f"{base}/assets/{ASSET}?view=partitions&partition={day}")
            expect(page.get_by_text("Materialized (1)")).to_be_visible()
            page.screenshot(path=str(shots / "partition_materialized.png"))
        finally:
            context.close()

    landed = list((webserver["data_dir"] / "landing").rglob("*.json*"))
    assert any(day in str(path) for path in landed), f"nothing landed for {day}: {landed[:5]}"


def _asset_groups() -> dict[str, set[str]]:
    """Each asset group and the assets in it, from the definitions."""
    members: dict[str, set[str]] = {}
    for definition in project_defs().assets or []:
        for key, group in definition.group_names_by_key.items():
            members.setdefault(group, set()).add(key.to_user_string())
    return members


def _wait_for_run(base: str, day: str) -> tuple[str, str]:
    """The launched run of ``day``'s partition and its terminal status (bounded by RUN_TIMEOUT)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    run_id, status = "", "NOT LAUNCHED"
    while time.monotonic() < deadline:
        data = _graphql(base, RUNS_QUERY, {"tags": [{"key": "dagster/partition", "value": day}]})
        runs = data["runsOrError"].get("results") or []
        if runs:
            run_id, status = runs[0]["runId"], runs[0]["status"]
            if status in TERMINAL:
                return run_id, status
        time.sleep(2)
    pytest.fail(f"run for {day} not finished after {RUN_TIMEOUT} s (last: {run_id} {status})")
