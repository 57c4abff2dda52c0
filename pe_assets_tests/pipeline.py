"""Running the asset graph in tests: resources pointed at a simulator and temporary storage."""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from pe_assets.defs import assets, views
from pe_assets.defs.resources import (
    LandingZoneResource,
    OAuthClientConfig,
    PredictiveEngagementResource,
    UtcClock,
)
from pe_assets.warehouse import DuckDBWarehouse, WarehouseResource
from pe_dev.simulator import SimulatorServer

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def pipeline_resources(
    sim: SimulatorServer,
    data_dir: Path,
    *,
    now: datetime | None = None,
    warehouse: WarehouseResource | None = None,
    requests_per_minute: int = 1000,
    landing_url: str | None = None,
) -> dict[str, object]:
    """The graph's resources: the simulator's API, a landing folder, DuckDB, a clock set to ``now``."""
    return {
        "pe_api": PredictiveEngagementResource(
            api_url=sim.api_url,
            login_url=sim.login_url,
            oauth_clients=[OAuthClientConfig(client_id=sim.client_id, client_secret=sim.client_secret)],
            requests_per_minute=requests_per_minute,
            budget_path=str(data_dir / "state" / "rate_budget.sqlite"),
            max_retry_after_seconds=30,
        ),
        "landing": LandingZoneResource(url=landing_url or str(data_dir / "landing")),
        "warehouse": warehouse or DuckDBWarehouse(path=str(data_dir / "warehouse.duckdb")),
        # Shifted, not frozen: each extraction still gets its own instant, as in production.
        "clock": UtcClock(offset_seconds=(now - datetime.now(UTC)).total_seconds() if now else 0.0),
    }


def run_days(
    resources: dict[str, object],
    first: date,
    last: date,
    *,
    selection: str | None = None,
    instance: dg.DagsterInstance | None = None,
    asset_defs: list[Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize [first, last] (inclusive) as one ranged run, like a backfill or the demo.

    ``asset_defs`` replaces the graph's assets (e.g. copies with shorter retry delays).
    """
    defs = dg.Definitions(
        assets=asset_defs if asset_defs is not None else dg.load_assets_from_modules([assets, views]),
        asset_checks=dg.load_asset_checks_from_modules([assets, views]),
        jobs=[dg.define_asset_job("test_job", selection=selection or "*")],
        resources=resources,
    )
    return defs.resolve_job_def("test_job").execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(),
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        raise_on_error=False,
    )
