"""The funnel views: hand-computed drop-offs on a tiny fixture, on DuckDB and on fakesnow (Snowflake)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from pe_assets.defs.common import views
from pe_assets.rules import PartitionWindow
from pe_assets.schemas import TABLES, typed_frame
from pe_assets.warehouse import DuckDBWarehouse, WarehouseError, WarehouseResource
from pe_dev.fakesnow import fakesnow_warehouse
from pe_dev.pipeline import TEST_ENV, project_defs

JOURNEY = TABLES["fact_predictive_journey"]
DAY1, DAY2 = date(2024, 3, 1), date(2024, 3, 2)

# (campaign, day, [(step_sequence, contact_count), ...]) - listed out of order on purpose.
FUNNELS = [
    ("c1", DAY1, [(1, 100), (2, 60), (3, 45)]),  # drops 40 then 15: largest at step 2
    ("c1", DAY2, [(3, 10), (1, 50), (2, 50)]),  # no loss at step 2, 40 at step 3
    ("c2", DAY1, [(1, 20)]),  # a single step: nothing to drop from
    ("c3", DAY1, [(1, 0), (2, 0)]),  # nobody entered: rates are NULL, not a division error
    ("c4", DAY1, [(1, 100), (2, 70), (3, 40)]),  # a tie (30, 30): the earliest step wins
    ("c5", DAY1, [(1, 10), (2, 12)]),  # a step gaining contacts: negative drop-off, no largest loss
]

# (campaign, day, step) -> (contact_count, previous_step_count, drop_off_count, drop_off_rate)
EXPECTED_STEPS = {
    ("c1", DAY1, 1): (100, None, None, None),
    ("c1", DAY1, 2): (60, 100, 40, 0.4),
    ("c1", DAY1, 3): (45, 60, 15, 0.25),
    ("c1", DAY2, 1): (50, None, None, None),
    ("c1", DAY2, 2): (50, 50, 0, 0.0),
    ("c1", DAY2, 3): (10, 50, 40, 0.8),
    ("c2", DAY1, 1): (20, None, None, None),
    ("c3", DAY1, 1): (0, None, None, None),
    ("c3", DAY1, 2): (0, 0, 0, None),
    ("c4", DAY1, 1): (100, None, None, None),
    ("c4", DAY1, 2): (70, 100, 30, 0.3),
    ("c4", DAY1, 3): (40, 70, 30, 30 / 70),
    ("c5", DAY1, 1): (10, None, None, None),
    ("c5", DAY1, 2): (12, 10, -2, -0.2),
}

# (campaign, day) -> (step_count, contacts_in, converted, conversion_rate,
#                     largest_drop_off_step_sequence, _step_id, _count, _rate)
EXPECTED_SNAPSHOT = {
    ("c1", DAY1): (3, 100, 45, 0.45, 2, "s2", 40, 0.4),
    ("c1", DAY2): (3, 50, 10, 0.2, 3, "s3", 40, 0.8),
    ("c2", DAY1): (1, 20, 20, 1.0, None, None, None, None),
    ("c3", DAY1): (2, 0, 0, None, None, None, None, None),
    ("c4", DAY1): (3, 100, 40, 0.4, 2, "s2", 30, 0.3),
    ("c5", DAY1): (2, 10, 12, 1.2, None, None, None, None),
}


def journey_frame() -> pd.DataFrame:
    rows = [
        {
            "load_timestamp": pd.Timestamp("2024-03-03 01:00"),
            "campaign_id": campaign,
            "scorecard_id": "sc1",
            "extraction_date": pd.Timestamp(day),
            "step_id": f"s{seq}",
            "step_name": f"Step {seq}",
            "step_sequence": seq,
            "contact_count": count,
            "conversion_rate": 0.5,
            "average_score": None,
            "exit_reason": None,
            "precision": None,
            "recall": None,
            "f1_score": None,
            "actual_conversion_rate": None,
            "model_version": None,
            "pending_backfill": None,
        }
        for campaign, day, steps in FUNNELS
        for seq, count in steps
    ]
    return typed_frame(JOURNEY, rows)


@pytest.fixture(params=["duckdb", "snowflake"])
def loaded_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseResource]:
    """The fixture funnels in fact_predictive_journey, on each warehouse."""
    if request.param == "duckdb":
        warehouse: WarehouseResource = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
        warehouse.replace_partition(JOURNEY, journey_frame(), PartitionWindow(DAY1, date(2024, 3, 3)))
        yield warehouse
        return
    with fakesnow_warehouse(tmp_path) as snowflake:
        snowflake.replace_partition(JOURNEY, journey_frame(), PartitionWindow(DAY1, date(2024, 3, 3)))
        yield snowflake


def plain(value: object) -> object:
    """A value as a comparable Python scalar: NULL/NaN -> None, numbers -> rounded float, dates -> date."""
    if pd.api.types.is_scalar(value) and pd.isna(value):  # None, NaN, NaT, pd.NA
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return value
    return round(float(value), 9)  # type: ignore[arg-type]


def plain_tuple(values: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(plain(v) for v in values)


def test_views_compute_the_hand_worked_drop_offs(loaded_warehouse: WarehouseResource) -> None:
    counts = views.create_views(loaded_warehouse)
    assert counts == {"funnel_daily": len(EXPECTED_STEPS), "funnel_daily_snapshot": len(EXPECTED_SNAPSHOT)}

    steps = loaded_warehouse.query("SELECT * FROM funnel_daily")
    assert list(steps.columns) == [
        "campaign_id",
        "extraction_date",
        "step_sequence",
        "step_id",
        "step_name",
        "contact_count",
        "previous_step_count",
        "drop_off_count",
        "drop_off_rate",
    ]
    got_steps = {
        (row.campaign_id, plain(row.extraction_date), int(row.step_sequence)): plain_tuple(
            (row.contact_count, row.previous_step_count, row.drop_off_count, row.drop_off_rate)
        )
        for row in steps.itertuples()
    }
    assert got_steps == {key: plain_tuple(value) for key, value in EXPECTED_STEPS.items()}

    snapshot = loaded_warehouse.query("SELECT * FROM funnel_daily_snapshot")
    got_snapshot = {
        (row.campaign_id, plain(row.extraction_date)): plain_tuple(
            (
                row.step_count,
                row.contacts_in,
                row.converted,
                row.conversion_rate,
                row.largest_drop_off_step_sequence,
                row.largest_drop_off_step_id,
                row.largest_drop_off_count,
                row.largest_drop_off_rate,
            )
        )
        for row in snapshot.itertuples()
    }
    assert got_snapshot == {key: plain_tuple(value) for key, value in EXPECTED_SNAPSHOT.items()}
    assert set(snapshot.loc[snapshot["largest_drop_off_step_id"] == "s2", "largest_drop_off_step_name"]) == {"Step 2"}


def test_views_follow_the_facts_and_can_be_recreated(loaded_warehouse: WarehouseResource) -> None:
    views.create_views(loaded_warehouse)
    frame = journey_frame()
    day2 = frame[frame["extraction_date"] == pd.Timestamp(DAY2)].copy()
    day2.loc[day2["step_sequence"] == 3, "contact_count"] = 25
    loaded_warehouse.replace_partition(JOURNEY, day2, PartitionWindow(DAY2, date(2024, 3, 3)))
    assert views.create_views(loaded_warehouse)["funnel_daily"] == len(EXPECTED_STEPS)  # idempotent
    answer = loaded_warehouse.query(
        "SELECT converted, largest_drop_off_count FROM funnel_daily_snapshot "
        "WHERE campaign_id = ? AND extraction_date = CAST(? AS DATE)",
        ["c1", DAY2.isoformat()],
    )
    assert plain_tuple(tuple(answer.iloc[0])) == (25.0, 25.0)


def test_views_need_the_fact_table(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="has fact_predictive_journey been materialized"):
        views.create_views(DuckDBWarehouse(path=str(tmp_path / "empty.duckdb")))


def _funnel_views() -> dg.AssetsDefinition:
    """The view asset from the code location's definitions (unbound: each test gives its warehouse)."""
    [asset] = [a for a in project_defs().assets or [] if dg.AssetKey("funnel_daily") in a.keys]
    return asset


def test_view_asset_definition() -> None:
    asset = _funnel_views()
    keys = {dg.AssetKey("funnel_daily"), dg.AssetKey("funnel_daily_snapshot")}
    assert set(asset.keys) == keys
    assert asset.partitions_def is None
    assert asset.backfill_policy == dg.BackfillPolicy.single_run()
    assert {asset.specs_by_key[key].group_name for key in keys} == {"warehouse"}
    assert {dep.asset_key for dep in asset.specs_by_key[dg.AssetKey("funnel_daily")].deps} == {
        dg.AssetKey("fact_predictive_journey")
    }
    assert {dep.asset_key for dep in asset.specs_by_key[dg.AssetKey("funnel_daily_snapshot")].deps} == {
        dg.AssetKey("funnel_daily")
    }
    for key in keys:
        spec = asset.specs_by_key[key]
        assert spec.description and "sql" in spec.kinds


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_view_asset_materializes(kind: str, tmp_path: Path) -> None:
    def run(warehouse: WarehouseResource) -> dg.ExecuteInProcessResult:
        warehouse.replace_partition(JOURNEY, journey_frame(), PartitionWindow(DAY1, date(2024, 3, 3)))
        return dg.materialize([_funnel_views()], resources={"warehouse": warehouse})

    if kind == "duckdb":
        result = run(DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb")))
    else:
        with fakesnow_warehouse(tmp_path) as snowflake:
            result = run(snowflake)
    assert result.success
    rows = {
        event.asset_key.path[-1]: event.step_materialization_data.materialization.metadata["dagster/row_count"].value
        for event in result.get_asset_materialization_events()
    }
    assert rows == {"funnel_daily": len(EXPECTED_STEPS), "funnel_daily_snapshot": len(EXPECTED_SNAPSHOT)}


def test_env_configured_snowflake_warehouse_runs_the_view_asset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production wiring (EnvVars resolved by Dagster inside the run), on fakesnow."""
    from pe_assets.config import Settings
    from pe_assets.warehouse.snowflake_warehouse import snowflake_warehouse
    from pe_dev.fakesnow import fakesnow_patched

    for name, value in {
        "SNOWFLAKE_ACCOUNT": "fakesnow",
        "SNOWFLAKE_USER": "loader",
        "SNOWFLAKE_PASSWORD": "not-a-real-secret",
        "SNOWFLAKE_DATABASE": "PE_ENV_TEST",
        "SNOWFLAKE_SCHEMA": "PE_VIEWS",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env({**TEST_ENV, **os.environ, "PE_WAREHOUSE": "snowflake"})
    assert settings.snowflake is not None
    warehouse = snowflake_warehouse(settings.snowflake)
    with fakesnow_patched(tmp_path / "fakesnow"):
        warehouse.replace_partition(JOURNEY, journey_frame(), PartitionWindow(DAY1, date(2024, 3, 3)))
        result = dg.materialize([_funnel_views()], resources={"warehouse": warehouse})
        assert result.success
        schema = warehouse.query("SELECT table_schema FROM information_schema.views WHERE table_name = 'FUNNEL_DAILY'")
        assert schema["table_schema"].tolist() == ["PE_VIEWS"]
