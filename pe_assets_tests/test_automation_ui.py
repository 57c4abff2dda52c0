"""``python -m pe_dev.ui``: its instance folder, its command, and a real start and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pe_dev import ui

REPO = Path(__file__).resolve().parents[1]


def test_prepare_dagster_home_writes_config_once(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = ui.prepare_dagster_home(tmp_path)
    assert home == (tmp_path / "dagster_home").resolve() and os.environ["DAGSTER_HOME"] == str(home)
    config = home / "dagster.yaml"
    assert "max_concurrent_runs" in config.read_text()
    config.write_text("telemetry:\n  enabled: false\n")  # the user's edit survives
    ui.prepare_dagster_home(tmp_path)
    assert config.read_text() == "telemetry:\n  enabled: false\n"


def test_prepare_dagster_home_fills_the_empty_file_the_demo_leaves(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").touch()
    ui.prepare_dagster_home(tmp_path)
    assert "pools" in (tmp_path / "home" / "dagster.yaml").read_text()


def test_dagster_dev_command_uses_the_workspace_on_loopback():
    command = ui.dagster_dev_command(4321)
    assert command[command.index("dev") :] == ["dev", "-w", str(ui.WORKSPACE), "-h", "127.0.0.1", "-p", "4321"]


@pytest.mark.timeout(240)
def test_ui_command_serves_and_stops_on_ctrl_c(tmp_path):
    port = ui.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PE_", "GENESYSCLOUD_", "DAGSTER_"))}
    log = (tmp_path / "ui.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "pe_dev.ui", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the UI did not answer within 150 s")
        assert (tmp_path / "data" / "dagster_home" / "dagster.yaml").exists()
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert process.wait(60) == 0
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5)
        assert "stopping the simulator" in (tmp_path / "ui.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
