"""A ranged run rebuilds its tables in chunks of days sized by sources per day, not by the range."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import duckdb

from pe_assets.defs.common import tables
from pe_assets.defs.common.tables import sized_chunks
from pe_assets.defs.predictive_engagement import assets, monitoring
from pe_assets.rules import PartitionWindow
from pe_assets.schemas import TABLES
from pe_assets.warehouse import DuckDBWarehouse
from pe_dev.pipeline import materializations, pipeline_resources, project_defs, run_days

FIRST = date(2024, 3, 1)
NOW = datetime(2024, 3, 20, 12, tzinfo=UTC)


def _window(days: int) -> PartitionWindow:
    return PartitionWindow(FIRST, FIRST + timedelta(days=days))


def _spans(chunks: Iterator[PartitionWindow] | list[PartitionWindow]) -> list[int]:
    return [len(chunk.days) for chunk in chunks]


def test_chunks_keep_to_the_day_limit_when_sources_are_few():
    assert _spans(sized_chunks(_window(70), lambda day: 400)) == [31, 31, 8]


def test_more_sources_per_day_make_shorter_chunks_never_less_than_a_day(monkeypatch):
    monkeypatch.setattr(tables, "CHUNK_SOURCE_DAYS", 1000)
    assert _spans(sized_chunks(_window(10), lambda day: 400)) == [2, 2, 2, 2, 2]
    assert _spans(sized_chunks(_window(3), lambda day: 5000)) == [1, 1, 1]  # a day over the budget is alone
    # Busy and quiet days mix: a chunk closes before the day that would pass the budget.
    sizes = [900, 50, 50, 950, 10, 10]
    assert _spans(sized_chunks(_window(6), lambda day: sizes[(day - FIRST).days])) == [3, 3]
    assert _spans(sized_chunks(_window(4), lambda day: 0)) == [4]


def test_chunks_list_at_most_one_day_ahead():
    listed: list[date] = []
    chunks = sized_chunks(_window(5), lambda day: listed.append(day) or 10_000)
    first = next(chunks)
    assert first == PartitionWindow(FIRST, FIRST + timedelta(days=1))
    assert listed == [FIRST, FIRST + timedelta(days=1)]  # the next day decides where this chunk ends


def _table_rows(path: str) -> dict[str, list[tuple]]:
    """Every rebuilt table's rows but the run's load_timestamp, in a stable order."""
    rows = {}
    with duckdb.connect(path, read_only=True) as con:
        for table in ("fact_journey_step", "rejected_journey_step", "fact_predictive_journey", "scorecard_drift"):
            columns = [c for c in TABLES[table].column_names if c != "load_timestamp"]
            listed = ", ".join(columns)
            rows[table] = con.execute(f"SELECT {listed} FROM {table} ORDER BY {listed}").fetchall()
        for table in ("fact_scorecard_performance", "fact_scorecard_score_distribution"):
            rows[table] = con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
    return rows


def test_a_run_with_more_campaigns_than_the_budget_writes_day_chunks_with_the_same_rows(
    make_simulator, tmp_path, monkeypatch
):
    sim = make_simulator(seed=11, client_limit=100_000, org_limit=100_000)
    sim.set_now(NOW)
    last = FIRST + timedelta(days=3)
    resources = pipeline_resources(sim, tmp_path, now=NOW)
    assert run_days(resources, FIRST, last).success  # extraction and tables, 4 days in one chunk

    # The same landed files again, with a budget of one day's campaigns: every table a day at a time.
    monkeypatch.setattr(tables, "CHUNK_SOURCE_DAYS", len(sim.campaigns()))
    seen: dict[str, list[PartitionWindow]] = {"landed_chunks": [], "table_chunks": []}

    def landed_chunks(*args: Any, **kwargs: Any) -> Iterator[tuple[PartitionWindow, Any]]:
        for chunk, files in tables.landed_chunks(*args, **kwargs):
            seen["landed_chunks"].append(chunk)
            yield chunk, files

    def table_chunks(*args: Any) -> list[PartitionWindow]:
        chunks = tables.table_chunks(*args)
        seen["table_chunks"].extend(chunks)
        return chunks

    monkeypatch.setattr(assets, "landed_chunks", landed_chunks)
    monkeypatch.setattr(assets, "table_chunks", table_chunks)
    monkeypatch.setattr(monitoring, "table_chunks", table_chunks)
    daily = {**resources, "warehouse": DuckDBWarehouse(path=str(tmp_path / "daily.duckdb"))}
    rebuilt = run_days(daily, FIRST, last, selection="not group:raw")
    assert rebuilt.success
    # One materialization per table and day, each with its row count; the columns are on the definition.
    step_days = materializations(rebuilt, "fact_journey_step")
    assert len(step_days) == 4 and all("dagster/row_count" in m.metadata for m in step_days)
    assert not any("dagster/column_schema" in m.metadata for m in step_days)

    one_day_each = [PartitionWindow(FIRST + timedelta(days=n), FIRST + timedelta(days=n + 1)) for n in range(4)]
    # Scorecards are a third of the campaigns: three of their days fit in the budget.
    by_scorecards = [
        PartitionWindow(FIRST, FIRST + timedelta(days=3)),
        PartitionWindow(FIRST + timedelta(days=3), last + timedelta(days=1)),
    ]
    assert seen["landed_chunks"] == one_day_each + by_scorecards  # journeys, then scorecard snapshots
    assert seen["table_chunks"] == one_day_each + by_scorecards  # fact_predictive_journey, then scorecard_drift
    whole_rows = _table_rows(str(tmp_path / "warehouse.duckdb"))
    assert all(whole_rows.values()) and whole_rows == _table_rows(str(tmp_path / "daily.duckdb"))


def test_every_table_asset_declares_its_models_columns_on_its_definition():
    defs = project_defs()
    for assets_def in defs.assets or []:
        for key, spec in getattr(assets_def, "specs_by_key", {}).items():
            table = key.to_user_string()
            if table in TABLES and spec.group_name != "raw":
                schema = spec.metadata["dagster/column_schema"]
                assert [column.name for column in schema.columns] == TABLES[table].column_names, table


def test_predictive_journey_rows_failing_their_model_in_the_warehouse_fail_the_schema_check_unwritten(
    make_simulator, tmp_path
):
    """fact_predictive_journey is checked in the warehouse (its model as SQL): a failure is the same
    blocking ``schema`` check, with Pandera's check names, and the day keeps its previous rows."""
    sim = make_simulator(seed=11, client_limit=100_000, org_limit=100_000)
    sim.set_now(NOW)
    resources = pipeline_resources(sim, tmp_path, now=NOW)
    assert run_days(resources, FIRST, FIRST).success
    db = str(tmp_path / "warehouse.duckdb")
    journey = "SELECT * FROM fact_predictive_journey ORDER BY ALL"
    with duckdb.connect(db) as con:
        before = con.execute(journey).fetchall()
        joined = con.execute("SELECT count(*) FROM fact_predictive_journey WHERE precision IS NOT NULL").fetchone()
        con.execute("UPDATE fact_scorecard_performance SET precision = 1.5")  # behind the pipeline's back

    result = run_days(resources, FIRST, FIRST, selection="key:fact_predictive_journey")
    assert not result.success
    [schema] = [e for e in result.get_asset_check_evaluations() if e.check_name == "schema"]
    assert schema.asset_key == dg.AssetKey("fact_predictive_journey") and not schema.passed
    assert joined and schema.metadata["failures"].value == {"precision: less_than_or_equal_to(1.0)": joined[0]}
    assert schema.metadata["rows_checked"].value == len(before)
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute(journey).fetchall() == before
