"""``python -m pe_dev.ui``: its instance folder, its command, its warning filter, stopping a whole
process group, and a real start and Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
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


def test_dev_command_is_dg_dev_on_loopback():
    command = ui.dev_command(4321)
    assert command == [str(Path(sys.executable).with_name("dg")), "dev", "-h", "127.0.0.1", "-p", "4321"]


def test_dev_command_falls_back_to_dagster_dev_on_the_workspace_without_dg(tmp_path, monkeypatch):
    monkeypatch.setattr(ui.sys, "executable", str(tmp_path / "python"))  # a folder with no dg
    command = ui.dev_command(4321)
    assert command[1:] == ["-m", "dagster", "dev", "-w", str(ui.WORKSPACE), "-h", "127.0.0.1", "-p", "4321"]
    assert ui.WORKSPACE.exists()


def test_child_environment_puts_the_filter_first_and_names_the_venv(tmp_path):
    env = ui.child_environment(tmp_path, {"PYTHONPATH": "/elsewhere", "KEEP": "1"})
    assert env["PYTHONPATH"] == os.pathsep.join([str(tmp_path), "/elsewhere"]) and env["KEEP"] == "1"
    if sys.prefix != sys.base_prefix:
        assert env["VIRTUAL_ENV"] == sys.prefix


def test_warning_filter_hides_only_dagsters_maturity_warnings(tmp_path):
    # Another sitecustomize later on the path (as a distribution may ship one) still runs.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "sitecustomize.py").write_text("import os\nos.environ['OTHER_SITECUSTOMIZE'] = 'ran'\n")
    env = ui.child_environment(ui.write_warning_filter(tmp_path / "filter"), dict(os.environ))
    env["PYTHONPATH"] += os.pathsep + str(tmp_path / "other")
    code = textwrap.dedent(
        """
        import os, warnings
        from dagster_shared.utils.warnings import beta_warning, preview_warning, supersession_warning
        beta_warning("subject-b")
        preview_warning("subject-p")
        supersession_warning("subject-s")
        warnings.warn("an ordinary warning", UserWarning)
        print(os.environ.get("OTHER_SITECUSTOMIZE"))
        """
    )
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ran"
    assert "UserWarning: an ordinary warning" in completed.stderr
    for hidden in ("BetaWarning", "PreviewWarning", "SupersessionWarning", "subject-"):
        assert hidden not in completed.stderr
    # Without the filter the same three warnings do show: the test above is not vacuous.
    unfiltered = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert all(name in unfiltered.stderr for name in ("BetaWarning", "PreviewWarning", "SupersessionWarning"))


# A group leader and a "service" it starts that holds a listening port, as the webserver that
# dg dev starts does; each ignores the signals named (the others kill it).
SERVICE = """
import os, signal, socket, sys, time
# Each disposition set explicitly: a test run started in the background inherits ignored signals.
for name in ("SIGINT", "SIGTERM"):
    signal.signal(getattr(signal, name), signal.SIG_IGN if name in sys.argv[1] else signal.SIG_DFL)
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(os.getpid(), server.getsockname()[1], flush=True)
time.sleep(600)
"""
LEADER = f"""
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN if "SIGINT" in sys.argv[1] else signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
subprocess.Popen([sys.executable, "-c", {SERVICE!r}, sys.argv[2]])
time.sleep(600)
"""


def _live_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are not zombies (an orphaned zombie holds no port)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid_text, rest = stat.read_text().split(" (", 1)
        except OSError:
            continue
        state, _ppid, group = rest.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            members.append(int(pid_text))
    return members


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="inspects /proc")
@pytest.mark.parametrize(
    ("leader_ignores", "service_ignores", "leader_code", "signals_sent"),
    [
        ("", "", -signal.SIGINT, [signal.SIGINT]),  # Ctrl-C is enough: no escalation
        # the leader exits, its service holds the port: SIGTERM
        ("", "SIGINT", -signal.SIGINT, [signal.SIGINT, signal.SIGTERM]),
        # only SIGKILL ends the service
        ("SIGINT", "SIGINT,SIGTERM", -signal.SIGTERM, [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]),
    ],
)
def test_stop_leaves_no_process_of_the_group_and_frees_the_port(
    leader_ignores, service_ignores, leader_code, signals_sent, monkeypatch
):
    process = subprocess.Popen(
        [sys.executable, "-c", LEADER, leader_ignores, service_ignores],
        stdout=subprocess.PIPE,
        start_new_session=True,  # as ui.main starts dg dev
    )
    try:
        assert process.stdout is not None
        service_pid, port = map(int, process.stdout.readline().split())
        assert set(_live_members(process.pid)) == {process.pid, service_pid} and _listening(port)

        sent: list[int] = []
        killpg = os.killpg
        monkeypatch.setattr(ui.os, "killpg", lambda pgid, signum: (sent.append(signum), killpg(pgid, signum)))
        # SIGTERM gets 2 s: on a loaded machine a leader may be scheduled late to die of it.
        code = ui.stop(process, timeout=0.5, term_timeout=2.0, kill_timeout=5)

        assert code == leader_code
        assert [signum for signum in sent if signum] == signals_sent  # 0 only probes the group
        assert _live_members(process.pid) == []
        assert not _listening(port)
        with socket.socket() as rebind:
            rebind.bind(("127.0.0.1", port))  # free for the next start
    finally:
        if _live_members(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def test_stop_of_an_exited_group_returns_its_code_without_signals(monkeypatch):
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    process.wait(30)
    sent: list[int] = []
    killpg = os.killpg
    monkeypatch.setattr(ui.os, "killpg", lambda pgid, signum: (sent.append(signum), killpg(pgid, signum)))
    assert ui.stop(process) == 3
    assert [signum for signum in sent if signum] == []  # 0 only probes the group


@pytest.mark.timeout(360)
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
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the UI did not answer within 240 s")
        assert (tmp_path / "data" / "dagster_home" / "dagster.yaml").exists()
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert process.wait(90) == 0
        assert not _listening(port)
        with socket.socket() as rebind:
            rebind.bind(("127.0.0.1", port))  # no webserver, daemon or code server left behind
        output = (tmp_path / "ui.log").read_text()
        assert "stopping the simulator" in output
        assert "superseded" not in output  # dg dev, not the superseded dagster dev
        for category in ("BetaWarning", "PreviewWarning", "SupersessionWarning"):
            assert category not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
