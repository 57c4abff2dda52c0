"""A throwaway PostgreSQL server for tests and benchmarks: Debian's binaries, one data folder, loopback.

    with PostgresServer(tmp_path / "pg") as pg:
        pg.url            # postgresql://pe@127.0.0.1:PORT/pe  (no password: trust auth on loopback)
        pg.stop(); pg.start()   # a restart keeps the data (fault tests)

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user (the data
folder is handed to it). ``.ci/run`` installs the ``postgresql`` package where it is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15")]
USER = "pe"
DATABASE = "pe"


def pg_bin() -> Path:
    """The folder holding initdb and pg_ctl."""
    for folder in PG_BIN_CANDIDATES:
        if (folder / "pg_ctl").exists():
            return folder
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql (see .ci/run)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in ``folder``, listening on ``host:port`` (a free port by default)."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self._as_postgres = os.geteuid() == 0
        # As root the server runs as ``postgres``, which must reach its folder: test folders are
        # often 0700 root (pytest resets its base folder), so the cluster lives in its own /tmp folder.
        self.folder = Path(tempfile.mkdtemp(prefix="pe-postgres-")) if self._as_postgres else Path(folder)
        self._owns_folder = self._as_postgres
        self.data = self.folder / "data"
        self.host = host
        self.port = port or free_port(host)
        self._bin = pg_bin()

    @property
    def url(self) -> str:
        """``postgresql://pe@HOST:PORT/pe``: the form PE_BUDGET_URL takes."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{DATABASE}"

    @property
    def dsn_parts(self) -> dict[str, str]:
        """The pieces dagster-postgres' ``postgres_db`` config takes (and their env var values)."""
        return {"hostname": self.host, "port": str(self.port), "username": USER, "db_name": DATABASE}

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else args
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self._run([str(self._bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8"])

    def start(self) -> PostgresServer:
        if not self.data.exists():
            self.init()
        options = f"-c listen_addresses={self.host} -p {self.port} -k {self.folder} -c fsync=off"
        self._run(
            [
                str(self._bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.folder / "log"),
                "-w",
                "start",
            ]
        )
        self._wait_ready()
        self._create_database()
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL on {self.host}:{self.port} did not start; see {self.folder / 'log'}")

    def _create_database(self) -> None:
        psql = [str(self._bin / "psql"), "-h", self.host, "-p", str(self.port), "-U", USER, "-d", "postgres", "-tAc"]
        exists = self._run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"]).stdout.strip()
        if exists != "1":
            self._run([*psql, f"CREATE DATABASE {DATABASE}"])

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop("immediate")
        finally:
            if self._owns_folder:
                shutil.rmtree(self.folder, ignore_errors=True)
