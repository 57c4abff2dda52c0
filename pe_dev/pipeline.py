"""Running the asset graph in tests: the code location's real definitions, resources pointed at a
simulator and temporary storage.

``project_defs`` is the one way tests get assets, checks, jobs, schedules and sensors: it builds
them with ``pe_assets.defs.build_defs``, exactly as ``pe_assets.definitions`` does, from settings
made by ``settings_for_tests`` (environment variables given as a mapping, never read from the process).
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg

from pe_assets.config import Settings
from pe_assets.defs import build_defs
from pe_assets.defs.common.resources import (
    LandingZoneResource,
    OAuthClientConfig,
    PredictiveEngagementResource,
    UtcClock,
)
from pe_assets.rules import range_tags
from pe_assets.warehouse import DuckDBWarehouse, WarehouseResource
from pe_dev.simulator import SimulatorServer

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

#: The OAuth variables the settings require; the tests' resources carry the simulator's own clients.
TEST_ENV = {"GENESYSCLOUD_OAUTHCLIENT_ID": "set-by-resources", "GENESYSCLOUD_OAUTHCLIENT_SECRET": "set-by-resources"}
#: A day after every test day, so PE_PARTITIONS_START checks pass whatever the machine's date.
TODAY = date(2030, 1, 1)


def settings_for_tests(**env: str) -> Settings:
    """Settings from ``TEST_ENV`` plus ``env`` (e.g. ``PE_SOURCE="journey-aggregates"``)."""
    return Settings.from_env({**TEST_ENV, **env}, today=TODAY)


@functools.cache
def _graph(settings: Settings) -> dg.Definitions:
    """``build_defs`` once per settings: tests that add a variant sensor share the real job objects."""
    return build_defs(settings)


def stand_in_resources() -> dict[str, object]:
    """Resources for definitions a test only inspects or ticks: nothing listens at the API address."""
    scratch = Path(tempfile.gettempdir())
    return {
        "pe_api": PredictiveEngagementResource(
            api_url="http://127.0.0.1:9",
            login_url="http://127.0.0.1:9",
            oauth_clients=[OAuthClientConfig(client_id="unused", client_secret="unused")],
            budget_path=str(scratch / "pe_unused_budget.sqlite"),
        ),
        "landing": LandingZoneResource(url=str(scratch / "pe_unused_landing")),
        "warehouse": DuckDBWarehouse(path=str(scratch / "pe_unused.duckdb")),
        "clock": UtcClock(),
    }


def project_defs(
    resources: dict[str, object] | None = None,
    *,
    settings: Settings | None = None,
    jobs: list[dg.UnresolvedAssetJobDefinition] | None = None,
) -> dg.Definitions:
    """The code location's definitions for ``settings`` (default ``settings_for_tests()``), with
    ``resources`` over stand-ins and any extra ``jobs``."""
    return dg.Definitions.merge(
        _graph(settings or settings_for_tests()),
        dg.Definitions(resources={**stand_in_resources(), **(resources or {})}, jobs=jobs or []),
    )


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
            job_poll_seconds=0.05,  # the simulator's async jobs finish in a fraction of a second
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
    settings: Settings | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize [first, last] (inclusive) of ``selection`` (default: everything) as one ranged run,
    like a backfill or the demo."""
    job = dg.define_asset_job("test_job", selection=selection or "*")
    defs = project_defs(resources, settings=settings, jobs=[job])
    return defs.resolve_job_def("test_job").execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(),
        tags=range_tags(first, last),
        raise_on_error=False,
    )


def materializations(result: dg.ExecuteInProcessResult, asset: str) -> list[dg.AssetMaterialization]:
    """The run's materializations of ``asset`` (whichever step, single or multi-asset, made them)."""
    return [
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey(asset)
    ]
