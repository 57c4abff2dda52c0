"""The warehouse contract, on DuckDB and on the Snowflake path (fakesnow): atomic, by name, typed."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime

import pandas as pd
import pytest

from pe_assets.rules import PartitionWindow
from pe_assets.schema_sql import failure_cases_sql
from pe_assets.schemas import TABLES, typed_frame, validate
from pe_assets.warehouse import DuckDBWarehouse, WarehouseError, WarehouseResource
from pe_dev.fakesnow import fakesnow_warehouse

SPEC = TABLES["fact_journey_step"]
DAY1, DAY2 = date(2024, 3, 5), date(2024, 3, 6)
WINDOW1 = PartitionWindow(DAY1, DAY2)


@pytest.fixture(params=["duckdb", "snowflake"])
def warehouse(request, tmp_path) -> Iterator[WarehouseResource]:
    if request.param == "duckdb":
        yield DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    else:
        with fakesnow_warehouse(tmp_path) as snowflake:
            yield snowflake


def steps(day: date, ids: list[str], count: int = 10) -> pd.DataFrame:
    stamp = pd.Timestamp("2024-03-07 01:02:03.456789")
    return typed_frame(
        SPEC,
        [
            {
                "campaign_id": "c1",
                "extraction_date": pd.Timestamp(day),
                "step_id": step_id,
                "step_name": None if n % 2 else f"Step {step_id}",
                "step_sequence": n + 1,
                "contact_count": count - n,
                "conversion_rate": 0.123456789012345,
                "average_score": None,
                "exit_reason": None,
                "scorecard_id": "s1",
                "extracted_at": stamp,
                "load_timestamp": stamp,
            }
            for n, step_id in enumerate(ids)
        ],
    )


def test_replacing_a_partition_is_idempotent_and_leaves_other_days(warehouse):
    warehouse.replace_partition(SPEC, steps(DAY1, ["a", "b"]), WINDOW1)
    warehouse.replace_partition(SPEC, steps(DAY2, ["x"]), PartitionWindow(DAY2, date(2024, 3, 7)))
    for _ in range(2):
        warehouse.replace_partition(SPEC, steps(DAY1, ["a", "b", "c"]), WINDOW1)
    frame = warehouse.read(SPEC)
    assert sorted(zip(frame["extraction_date"].dt.date, frame["step_id"], strict=True)) == [
        (DAY1, "a"),
        (DAY1, "b"),
        (DAY1, "c"),
        (DAY2, "x"),
    ]


def test_round_trip_keeps_types_nulls_and_precision(warehouse):
    written = steps(DAY1, ["a", "b"])
    warehouse.replace_partition(SPEC, written, WINDOW1)
    read = warehouse.read(SPEC, WINDOW1).sort_values("step_sequence").reset_index(drop=True)
    pd.testing.assert_frame_equal(read, written, check_exact=True)


def test_columns_go_by_name_not_position(warehouse):
    frame = steps(DAY1, ["a"])
    warehouse.replace_partition(SPEC, frame[list(reversed(frame.columns))], WINDOW1)
    assert warehouse.read(SPEC)["step_id"].tolist() == ["a"]


def test_a_write_failing_halfway_keeps_the_previous_rows(warehouse):
    warehouse.replace_partition(SPEC, steps(DAY1, ["a", "b"]), WINDOW1)
    broken = steps(DAY1, ["a", "b", "c"])
    broken.loc[2, "campaign_id"] = None  # NOT NULL: the INSERT fails after the DELETE ran
    with pytest.raises(WarehouseError, match=r"rolled back|previous rows"):
        warehouse.replace_partition(SPEC, broken, WINDOW1)
    assert sorted(warehouse.read(SPEC)["step_id"]) == ["a", "b"]


def test_rows_outside_the_window_are_refused_before_anything_changes(warehouse):
    warehouse.replace_partition(SPEC, steps(DAY1, ["a"]), WINDOW1)
    with pytest.raises(WarehouseError, match="outside"):
        warehouse.replace_partition(SPEC, steps(DAY2, ["x"]), WINDOW1)
    assert warehouse.read(SPEC)["step_id"].tolist() == ["a"]


def test_an_empty_frame_clears_its_window(warehouse):
    warehouse.replace_partition(SPEC, steps(DAY1, ["a"]), WINDOW1)
    warehouse.replace_partition(SPEC, typed_frame(SPEC, []), WINDOW1)
    assert warehouse.read(SPEC).empty


def test_reading_a_table_never_written_gives_a_typed_empty_frame(warehouse):
    frame = warehouse.read(TABLES["fact_predictive_journey"])
    assert frame.empty and list(frame.columns) == TABLES["fact_predictive_journey"].column_names


def test_a_session_keeps_each_write_atomic_and_serves_other_threads(warehouse):
    """Writes in a session (a step's chunks) commit one by one; a failing one rolls back alone; a
    thread building the next chunk reads through the same session meanwhile."""
    with warehouse.session():
        warehouse.replace_partition(SPEC, steps(DAY1, ["a", "b"]), WINDOW1)
        broken = steps(DAY2, ["x", "y"])
        broken.loc[1, "campaign_id"] = None
        with pytest.raises(WarehouseError, match="rolled back"):
            warehouse.replace_partition(SPEC, broken, PartitionWindow(DAY2, date(2024, 3, 7)))
        with ThreadPoolExecutor(1) as other_thread:
            seen = other_thread.submit(lambda: sorted(warehouse.read(SPEC)["step_id"])).result()
        assert seen == ["a", "b"]
        with warehouse.session():  # nested: the same session
            warehouse.replace_partition(SPEC, steps(DAY2, ["x"]), PartitionWindow(DAY2, date(2024, 3, 7)))
    assert sorted(warehouse.read(SPEC)["step_id"]) == ["a", "b", "x"]


def test_a_duckdb_session_holds_the_file_for_its_step_only(tmp_path):
    """Another process's writer (another lock holder) waits while a session is open, then writes."""
    path = str(tmp_path / "warehouse.duckdb")
    step = DuckDBWarehouse(path=path)
    other = DuckDBWarehouse(path=path, lock_timeout_seconds=0.2)
    with step.session():
        step.replace_partition(SPEC, steps(DAY1, ["a"]), WINDOW1)
        with pytest.raises(WarehouseError, match="stayed locked"):
            other.replace_partition(SPEC, steps(DAY2, ["x"]), PartitionWindow(DAY2, date(2024, 3, 7)))
    other.replace_partition(SPEC, steps(DAY2, ["x"]), PartitionWindow(DAY2, date(2024, 3, 7)))
    assert sorted(other.read(SPEC)["step_id"]) == ["a", "x"]


# -- rows built and checked in the warehouse (fact_predictive_journey) -----------------------------

JOURNEY = TABLES["fact_predictive_journey"]
LOADED_AT = datetime(2024, 3, 8, 6, 0, 0)


def journey_rows_sql(**overrides: str) -> str:
    """PREDICTIVE_JOURNEY_SQL's columns from fact_journey_step alone (no snapshots), with
    ``overrides`` (column -> SQL expression) to build rows that break the model."""
    columns = {
        name: name if name in SPEC.column_names else f"CAST(NULL AS {sql_type})" for name, sql_type in JOURNEY.columns
    }
    columns["load_timestamp"] = "CAST(? AS TIMESTAMP)"
    columns.update(overrides)
    select = ", ".join(f"{expression} AS {name}" for name, expression in columns.items())
    return f"SELECT {select} FROM fact_journey_step WHERE {PartitionWindow.sql_condition('extraction_date')}"


def journey_params(window: PartitionWindow) -> list[object]:
    return [LOADED_AT.isoformat(sep=" "), *window.sql_params]


def test_rows_built_in_the_warehouse_are_checked_and_written_there(warehouse):
    warehouse.replace_partition(SPEC, steps(DAY1, ["a", "b"]), WINDOW1)
    warehouse.replace_partition(SPEC, steps(DAY2, ["x"]), PartitionWindow(DAY2, date(2024, 3, 7)))
    sql = journey_rows_sql()
    for _ in range(2):  # idempotent
        report, written = warehouse.replace_partition_with_query(JOURNEY, sql, journey_params(WINDOW1), WINDOW1)
        assert report.passed and report.rows == written == 2
    frame = warehouse.read(JOURNEY).sort_values("step_sequence").reset_index(drop=True)
    assert frame["step_id"].tolist() == ["a", "b"] and frame["contact_count"].tolist() == [10, 9]
    assert (frame["load_timestamp"] == pd.Timestamp(LOADED_AT)).all() and frame["precision"].isna().all()
    assert frame["step_name"].tolist() == ["Step a", None]


def test_warehouse_rows_failing_their_model_are_reported_as_pandera_reports_them_and_not_written(warehouse):
    warehouse.replace_partition(SPEC, steps(DAY1, ["a", "b"]), WINDOW1)
    warehouse.replace_partition_with_query(JOURNEY, journey_rows_sql(), journey_params(WINDOW1), WINDOW1)
    bad = steps(DAY1, ["a", "a", "c", ""])  # a repeated key and an empty step id
    bad.loc[2, "contact_count"] = -3
    bad.loc[0, "step_sequence"] = 0
    warehouse.replace_partition(SPEC, bad, WINDOW1)  # the source table holds them (no checks on this path)
    sql = journey_rows_sql(precision="CASE WHEN step_id = 'c' THEN 1.5 ELSE NULL END")
    report, written = warehouse.replace_partition_with_query(JOURNEY, sql, journey_params(WINDOW1), WINDOW1)

    as_frame = typed_frame(JOURNEY, warehouse.query(sql, journey_params(WINDOW1)))
    pandera = validate(JOURNEY, as_frame)
    assert not report.passed and written == 0 and report.rows == 4
    assert (
        report.summary()
        == pandera.summary()
        == {
            "multiple_fields_uniqueness": 2,
            "step_id: str_length(1, None)": 1,
            "contact_count: greater_than_or_equal_to(0)": 1,
            "step_sequence: greater_than_or_equal_to(1)": 1,
            "precision: less_than_or_equal_to(1.0)": 1,
        }
    )

    def checks(cases: pd.DataFrame) -> list[tuple[str, str, str]]:
        return sorted(zip(cases["schema_context"], cases["column"], cases["check"], strict=True))

    assert checks(report.failure_cases) == checks(pandera.failure_cases)
    assert sorted(warehouse.read(JOURNEY)["step_id"]) == ["a", "b"]  # the previous rows, untouched


def test_a_null_the_table_refuses_is_reported_as_a_failed_check(warehouse):
    warehouse.replace_partition(SPEC, steps(DAY1, ["a", "b"]), WINDOW1)
    sql = journey_rows_sql(campaign_id="CASE WHEN step_id = 'b' THEN NULL ELSE campaign_id END")
    report, written = warehouse.replace_partition_with_query(JOURNEY, sql, journey_params(WINDOW1), WINDOW1)
    assert written == 0 and report.summary() == {"campaign_id: not_nullable": 1}
    assert warehouse.read(JOURNEY).empty


def test_warehouse_rows_outside_the_window_are_refused(warehouse):
    warehouse.replace_partition(SPEC, steps(DAY1, ["a"]), WINDOW1)
    warehouse.replace_partition(SPEC, steps(DAY2, ["x"]), PartitionWindow(DAY2, date(2024, 3, 7)))
    warehouse.replace_partition_with_query(JOURNEY, journey_rows_sql(), journey_params(WINDOW1), WINDOW1)
    both_days = PartitionWindow(DAY1, date(2024, 3, 7))
    with pytest.raises(WarehouseError, match=r"1 rows have extraction_date outside 2024-03-05\.\.2024-03-06"):
        warehouse.replace_partition_with_query(JOURNEY, journey_rows_sql(), journey_params(both_days), WINDOW1)
    assert warehouse.read(JOURNEY)["step_id"].tolist() == ["a"]


def test_a_model_with_checks_sql_cannot_state_is_refused_by_name():
    with pytest.raises(ValueError, match=r"step_sequence_unique_per_day.*exit_reason_not_empty"):
        failure_cases_sql(SPEC, "staged")
