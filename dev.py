#!/usr/bin/env python3
"""pe_assets' developer entry point; needs only python3 >= 3.11.

    python3 dev.py demo [--days N]   run the main job on the embedded defaults (simulator -> DuckDB)
    python3 dev.py test [PYTEST ARGS] lint, `dg check defs` (both sources), then run the test suite
    python3 dev.py ui                start the simulator and the Dagster UI (dagster dev) on 127.0.0.1
    python3 dev.py simulator [ARGS]  run the API simulator alone (python -m pe_dev.simulator --help)
    python3 dev.py setup             create or refresh the virtualenv only

Each command first creates (or reuses) the virtualenv in .venv and installs the locked
dependencies into it; it is reinstalled only when pyproject.toml or requirements-lock.txt change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("PE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".pe_assets-installed"


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "requirements-lock.txt", "setup.py"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create .venv and install the locked dependencies, unless it is already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 the user has
        sys.exit(f"pe_assets needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = _inputs_digest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    print("installing dependencies (first run takes about a minute)", flush=True)
    _run([PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "uv"])
    uv = [PYTHON, "-m", "uv", "pip", "install", "--quiet", "--python", str(PYTHON)]
    _run([*uv, "-r", str(ROOT / "requirements-lock.txt")])
    _run([*uv, "--no-deps", "-e", str(ROOT)])
    STAMP.write_text(wanted)


def _run(command: list[object], **kwargs: object) -> None:
    completed = subprocess.run([str(c) for c in command], cwd=ROOT, **kwargs)  # type: ignore[call-overload]
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def _exec(command: list[object]) -> None:
    """Replace this process, so signals and exit codes pass straight through."""
    os.chdir(ROOT)
    args = [str(c) for c in command]
    os.execv(args[0], args)


def _check_defs() -> None:
    """`dg check defs` loads the code location as Dagster does, once per API source.

    Placeholder OAuth variables: loading checks that they are set, never their values.
    """
    env = {
        **os.environ,
        "VIRTUAL_ENV": str(VENV),  # dg warns when the project's venv is not the active one
        "GENESYSCLOUD_OAUTHCLIENT_ID": os.environ.get("GENESYSCLOUD_OAUTHCLIENT_ID", "dg-check-defs"),
        "GENESYSCLOUD_OAUTHCLIENT_SECRET": os.environ.get("GENESYSCLOUD_OAUTHCLIENT_SECRET", "dg-check-defs"),
    }
    for source in ("predictive-engagement", "journey-aggregates"):
        print(f"dg check defs (PE_SOURCE={source})", flush=True)
        _run([BIN / "dg", "check", "defs"], env={**env, "PE_SOURCE": source})


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return
    command, rest = argv[0], argv[1:]
    if command not in ("demo", "test", "ui", "simulator", "setup"):
        sys.exit(f"unknown command {command!r}\n{__doc__}")
    ensure_venv()
    if command == "demo":
        _exec([PYTHON, "-m", "pe_dev.demo", *rest])
    elif command == "test":
        _run([BIN / "ruff", "check", "."])
        _check_defs()
        _exec([PYTHON, "-m", "pytest", *rest])
    elif command == "ui":
        _exec([PYTHON, "-m", "pe_dev.ui", *rest])
    elif command == "simulator":
        _exec([PYTHON, "-m", "pe_dev.simulator", *rest])


if __name__ == "__main__":
    main(sys.argv[1:])
