"""Shared machinery of the chaos, kill, concurrency and bad-input tests (and ``benchmarks/chaos.py``).

* ``materialize``: run the asset graph in process over a range of days with the API assets'
  ``RetryPolicy`` *delay* shortened through PE_STEP_RETRY_DELAY_SECONDS, so a Dagster step retry
  costs a fraction of a second instead of 30 s.
* ``snapshot``/``compare``: every warehouse table as sorted rows without the load/extraction
  timestamps, and a row-for-row comparison that counts mismatches, duplicates and lost rows.
* ``chaos_run``: one seed of the chaos experiment (fault-free truth vs a faulty run).
* A subprocess entry point (``python -m pe_dev.chaos materialize ...``) used by
  the kill and concurrency tests, with an optional pause inside the warehouse transaction
  (after the partition's DELETE, before its INSERT) to give a SIGKILL a wide, known window.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from pydantic import Field

from pe_assets.defs.common.resources import OAuthClientConfig, PredictiveEngagementResource
from pe_assets.schemas import TABLES
from pe_assets.warehouse import DuckDBWarehouse
from pe_dev.pipeline import pipeline_resources, run_days, settings_for_tests
from pe_dev.simulator import SimulatorConfig, SimulatorServer

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", message=".*Definitions.resolve_job_def.*")

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Columns that differ between two correct runs (when they ran), never what they loaded.
VOLATILE_COLUMNS = frozenset({"load_timestamp", "extracted_at", "listed_at", "snapshot_extracted_at"})
#: A clock long after every test day: scorecard outcomes are final (no pending_backfill flips).
NOW = datetime(2024, 3, 20, 12, tzinfo=UTC)
FIRST_DAY = date(2024, 3, 5)
#: Small world for CI: 5 campaigns (4 extracted), one of 1100 steps (2 pages a day).
SMALL_WORLD: dict[str, Any] = {"n_campaigns": 5, "big_campaign_steps": 1100}
#: Server limits far above the client's cap: throttling is not what these tests are about.
NO_LIMITS: dict[str, Any] = {"client_limit": 100_000, "org_limit": 100_000}


# -- in-process runs ---------------------------------------------------------------------------------
def materialize(
    resources: dict[str, object],
    first: date,
    last: date,
    *,
    selection: str | None = None,
    retry_delay: float = 0.2,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize [first, last] as one ranged run (``run_days``) with short step retries.

    Same ``max_retries`` as production; only the wait changes, through the real setting
    (PE_STEP_RETRY_DELAY_SECONDS), so a Dagster step retry costs a fraction of a second, not 30 s.
    """
    settings = settings_for_tests(PE_STEP_RETRY_DELAY_SECONDS=str(retry_delay))
    return run_days(resources, first, last, selection=selection, instance=instance, settings=settings)


def step_retries(result: dg.ExecuteInProcessResult) -> int:
    """How many times Dagster put a step up for retry in this run."""
    return sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY")


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """Every step failure's error text (message, then the exception's own text)."""
    texts: list[str] = []
    for event in result.all_events:
        if event.event_type_value in ("STEP_FAILURE", "STEP_UP_FOR_RETRY"):
            data = event.event_specific_data
            error = getattr(data, "error", None)
            parts = [event.message or ""]
            while error is not None:
                parts.append(error.message)
                error = error.cause
            texts.append("\n".join(parts))
    return texts


def resources_for(
    sim: SimulatorServer, data_dir: Path, *, timeout_seconds: float = 30.0, now: datetime = NOW
) -> dict[str, object]:
    """``pipeline_resources`` with the client's timeout set (slow faults must outlast it).

    The clock starts at ``now`` when the resources are built: a later run that must look newer
    than an earlier one (the latest landed extraction wins) needs a later ``now``.
    """
    res = pipeline_resources(sim, data_dir, now=now)
    api = res["pe_api"]
    assert isinstance(api, PredictiveEngagementResource)
    res["pe_api"] = PredictiveEngagementResource(
        **{**api.model_dump(), "oauth_clients": api.oauth_clients, "timeout_seconds": timeout_seconds}
    )
    return res


def start_simulator(**overrides: Any) -> SimulatorServer:
    """A started simulator (small world, no server limits, clock at NOW) with ``overrides``."""
    sim = SimulatorServer(SimulatorConfig(**{**SMALL_WORLD, **NO_LIMITS, **overrides}), host="127.0.0.1", port=0)
    sim.start()
    sim.set_now(NOW)
    return sim


# -- comparing warehouses ------------------------------------------------------------------------
def snapshot(db_path: str | Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every pe_assets table as sorted rows, volatile timestamp columns left out."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    if not Path(db_path).exists():
        return {name: [] for name in TABLES}
    with duckdb.connect(str(db_path), read_only=True) as con:
        existing = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for name, spec in TABLES.items():
            if name not in existing:
                out[name] = []
                continue
            cols = [c for c in spec.column_names if c not in VOLATILE_COLUMNS]
            rows = con.execute(f"SELECT {', '.join(cols)} FROM {name}").fetchall()
            out[name] = sorted(rows, key=repr)
    return out


@dataclass
class Comparison:
    """Row-for-row difference between an expected and an actual set of tables."""

    rows_compared: int = 0
    lost: int = 0
    extra: int = 0
    duplicates: int = 0
    by_table: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # table -> (lost, extra, dups)

    @property
    def mismatches(self) -> int:
        """Rows lost plus rows that should not be there (duplicates included)."""
        return self.lost + self.extra

    @property
    def equal(self) -> bool:
        return self.mismatches == 0 and self.duplicates == 0


#: Append-only history tables: one row per extraction, so extra (identical) snapshots are by design
#: when a day was extracted more times (re-runs, overlapping runs).
SNAPSHOT_TABLES = frozenset({"fact_scorecard_performance", "fact_scorecard_score_distribution"})


def compare(
    expected: dict[str, list[tuple[Any, ...]]],
    actual: dict[str, list[tuple[Any, ...]]],
    *,
    distinct_tables: frozenset[str] = frozenset(),
) -> Comparison:
    """Multiset comparison per table; ``duplicates`` counts surplus copies of any row in ``actual``.

    Tables in ``distinct_tables`` are compared as sets (for the snapshot history after re-runs).
    """
    result = Comparison()
    for table in sorted(set(expected) | set(actual)):
        want, got = Counter(expected.get(table, [])), Counter(actual.get(table, []))
        if table in distinct_tables:
            want, got = Counter(set(want)), Counter(set(got))
        lost = sum((want - got).values())
        extra = sum((got - want).values())
        dups = sum(n - 1 for n in got.values() if n > 1) - sum(n - 1 for n in want.values() if n > 1)
        result.rows_compared += max(sum(want.values()), sum(got.values()))
        result.lost += lost
        result.extra += extra
        result.duplicates += max(0, dups)
        if lost or extra or dups > 0:
            result.by_table[table] = (lost, extra, max(0, dups))
    return result


# -- the chaos experiment --------------------------------------------------------------------------
@dataclass
class ChaosOutcome:
    """One seed: a fault-free run and a faulty run of the same world, compared."""

    seed: int
    rate: float
    faults_injected: Counter[str]
    requests: int
    dagster_retries: int
    reruns: int
    converged: bool
    comparison: Comparison
    seconds: float


def chaos_run(
    seed: int,
    rate: float,
    work_dir: Path,
    *,
    days: int = 2,
    timeout_seconds: float = 0.4,
    slow_seconds: float = 0.8,
    retry_delay: float = 0.2,
    max_reruns: int = 2,
    world: dict[str, Any] | None = None,
) -> ChaosOutcome:
    """Materialize ``days`` days fault-free and with faults (all five kinds) on ``seed``; compare.

    The faulty simulator draws its faults from its own seeded RNG (``fault_seed=seed``). A step that
    still fails after the client's retries is retried by Dagster (short delay, same run); if the
    run still fails, it is run again (``reruns``, at most ``max_reruns``) as an operator would.
    """
    started = time.monotonic()
    first, last = FIRST_DAY, FIRST_DAY + timedelta(days=days - 1)
    world = {**SMALL_WORLD, **(world or {}), "seed": seed}
    truth_dir, chaos_dir = work_dir / f"truth-{seed}", work_dir / f"chaos-{seed}"
    clean = start_simulator(**world)
    try:
        result = materialize(resources_for(clean, truth_dir), first, last, retry_delay=retry_delay)
        if not result.success:
            raise RuntimeError(f"fault-free run failed on seed {seed}: {failure_messages(result)}")
    finally:
        clean.stop()
    faulty = start_simulator(
        **world,
        fault_rate=rate,
        fault_kinds=("5xx", "drop", "slow", "429", "revoke"),
        fault_seed=seed,
        slow_seconds=slow_seconds,
    )
    retries, reruns = 0, 0
    try:
        resources = resources_for(faulty, chaos_dir, timeout_seconds=timeout_seconds)
        while True:
            result = materialize(resources, first, last, retry_delay=retry_delay)
            retries += step_retries(result)
            if result.success or reruns >= max_reruns:
                break
            reruns += 1
        log = faulty.log_records()
    finally:
        faulty.stop()
    comparison = compare(snapshot(truth_dir / "warehouse.duckdb"), snapshot(chaos_dir / "warehouse.duckdb"))
    return ChaosOutcome(
        seed=seed,
        rate=rate,
        faults_injected=Counter(r["fault"] for r in log if r["fault"]),
        requests=len(log),
        dagster_retries=retries,
        reruns=reruns,
        converged=result.success and comparison.equal,
        comparison=comparison,
        seconds=time.monotonic() - started,
    )


# -- subprocess runs -----------------------------------------------------------------------------
class _PausingConnection:
    """A DuckDB connection proxy: before each INSERT, leave a marker and sleep (the DELETE is done)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, marker_dir: Path, pause: float) -> None:
        self._con, self._marker_dir, self._pause = con, marker_dir, pause

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT INTO "):
            table = sql.split()[2]
            self._marker_dir.mkdir(parents=True, exist_ok=True)
            (self._marker_dir / f"insert-{table}-{os.getpid()}-{time.monotonic_ns()}").touch()
            time.sleep(self._pause)
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


class PausingDuckDBWarehouse(DuckDBWarehouse):
    """DuckDB warehouse that pauses inside each write transaction (between DELETE and INSERT).

    Only the kill tests use it, to SIGKILL a process while a partition is deleted but the
    replacement is not committed.
    """

    marker_dir: str = Field(description="Folder receiving a marker file before each INSERT")
    pause_seconds: float = 0.5

    @contextlib.contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with super().connection() as con:
            yield _PausingConnection(con, Path(self.marker_dir), self.pause_seconds)  # type: ignore[misc]


def child_env(sim: SimulatorServer, secret: str | None = None) -> dict[str, str]:
    """Environment of a child run: the simulator's URL and credentials (the secret via env, not argv)."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        PE_CHILD_API_URL=sim.api_url,
        PE_CHILD_CLIENT_ID=sim.client_id,
        PE_CHILD_CLIENT_SECRET=secret if secret is not None else sim.client_secret,
        PYTHONUNBUFFERED="1",
    )
    return env


def spawn_materialize(
    sim: SimulatorServer,
    data_dir: Path,
    first: date,
    last: date,
    *,
    pause_before_insert: float = 0.0,
    marker_dir: Path | None = None,
    log_path: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m pe_dev.chaos materialize`` against ``sim`` (not waited)."""
    cmd = [
        sys.executable,
        "-m",
        "pe_dev.chaos",
        "materialize",
        "--data-dir",
        str(data_dir),
        "--first",
        first.isoformat(),
        "--last",
        last.isoformat(),
        "--pause-before-insert",
        str(pause_before_insert),
    ]
    if marker_dir is not None:
        cmd += ["--marker-dir", str(marker_dir)]
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=child_env(sim), stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chaos")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("materialize")
    run.add_argument("--data-dir", required=True)
    run.add_argument("--first", required=True)
    run.add_argument("--last", required=True)
    run.add_argument("--pause-before-insert", type=float, default=0.0)
    run.add_argument("--marker-dir", default=None)
    run.add_argument("--retry-delay", type=float, default=0.2)
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    warehouse: DuckDBWarehouse = DuckDBWarehouse(path=str(data_dir / "warehouse.duckdb"))
    if args.pause_before_insert > 0:
        warehouse = PausingDuckDBWarehouse(
            path=str(data_dir / "warehouse.duckdb"),
            marker_dir=args.marker_dir or str(data_dir / "markers"),
            pause_seconds=args.pause_before_insert,
        )
    api_url = os.environ["PE_CHILD_API_URL"]
    resources: dict[str, object] = {
        "pe_api": PredictiveEngagementResource(
            api_url=api_url,
            login_url=api_url,
            oauth_clients=[
                OAuthClientConfig(
                    client_id=os.environ["PE_CHILD_CLIENT_ID"], client_secret=os.environ["PE_CHILD_CLIENT_SECRET"]
                )
            ],
            requests_per_minute=1000,
            budget_path=str(data_dir / "state" / "rate_budget.sqlite"),
            max_retry_after_seconds=30,
        ),
        **{k: v for k, v in _local_resources(data_dir).items()},
        "warehouse": warehouse,
    }
    result = materialize(
        resources, date.fromisoformat(args.first), date.fromisoformat(args.last), retry_delay=args.retry_delay
    )
    print("RUN_SUCCESS" if result.success else "RUN_FAILURE", flush=True)
    for text in failure_messages(result):
        print(text, flush=True)
    return 0 if result.success else 1


def _local_resources(data_dir: Path) -> dict[str, object]:
    from pe_assets.defs.common.resources import LandingZoneResource, UtcClock

    return {
        "landing": LandingZoneResource(url=str(data_dir / "landing")),
        "clock": UtcClock(offset_seconds=(NOW - datetime.now(UTC)).total_seconds()),
    }


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
