"""SnowflakeWarehouse: settings, shipped DDL, and atomic writes and typed reads against fakesnow."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from pe_assets.config import Settings, SettingsError
from pe_assets.rules import PartitionWindow
from pe_assets.schemas import TABLES, typed_frame
from pe_assets.warehouse import WarehouseError
from pe_assets.warehouse.snowflake_warehouse import (
    SnowflakeWarehouse,
    cluster_columns,
    create_table_sql,
    shipped_ddl,
    snowflake_ddl,
    snowflake_warehouse,
)
from pe_dev.fakesnow import fakesnow_warehouse
from pe_dev.pipeline import TEST_ENV

STEPS = TABLES["fact_journey_step"]
JOURNEY = TABLES["fact_predictive_journey"]
PERFORMANCE = TABLES["fact_scorecard_performance"]
CAMPAIGNS = TABLES["dim_predictive_campaign"]
DAY1, DAY2, DAY3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)
WINDOW1 = PartitionWindow(DAY1, DAY2)
WINDOW2 = PartitionWindow(DAY2, DAY3)


def step_rows(day: date, counts: list[int], campaign: str = "c1") -> pd.DataFrame:
    """A day's fact_journey_step rows, one per count, with NULLs in the nullable columns."""
    return typed_frame(
        STEPS,
        [
            {
                "campaign_id": campaign,
                "extraction_date": pd.Timestamp(day),
                "step_id": f"s{seq}",
                "step_name": f"Step {seq}" if seq % 2 else None,
                "step_sequence": seq,
                "contact_count": count,
                "conversion_rate": count / counts[0] if counts[0] else 0.0,
                "average_score": 0.5 if seq == 1 else None,
                "exit_reason": None,
                "scorecard_id": "sc1",
                "extracted_at": pd.Timestamp(day) + pd.Timedelta(hours=26, microseconds=123456),
                "load_timestamp": pd.Timestamp(day) + pd.Timedelta(hours=27),
            }
            for seq, count in enumerate(counts, start=1)
        ],
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[SnowflakeWarehouse]:
    with fakesnow_warehouse(tmp_path) as wh:
        yield wh


def sorted_frame(frame: pd.DataFrame, *keys: str) -> pd.DataFrame:
    return frame.sort_values(list(keys)).reset_index(drop=True)


# -- DDL ------------------------------------------------------------------------------------------


def test_shipped_ddl_file_matches_the_specs() -> None:
    assert shipped_ddl() == snowflake_ddl(), (
        "pe_assets/sql/snowflake_tables.sql is stale: "
        "python -m pe_assets.warehouse.snowflake_warehouse > pe_assets/sql/snowflake_tables.sql"
    )
    for name in TABLES:
        assert f"CREATE TABLE IF NOT EXISTS {name} (" in shipped_ddl()


def test_ddl_types_and_clustering() -> None:
    ddl = create_table_sql(JOURNEY)
    assert "    load_timestamp TIMESTAMP_NTZ NOT NULL,\n" in ddl
    assert "    extraction_date DATE NOT NULL,\n" in ddl
    assert "    contact_count NUMBER(38,0) NOT NULL,\n" in ddl
    assert "    conversion_rate FLOAT,\n" in ddl  # NULL when a journey funnel has no qualified entries
    assert "    precision FLOAT,\n" in ddl  # nullable in the model: no scorecard, no metrics
    assert "    pending_backfill BOOLEAN\n" in ddl
    assert ddl.endswith("CLUSTER BY (extraction_date, campaign_id)")
    assert cluster_columns(PERFORMANCE) == ("extraction_date",)
    assert cluster_columns(CAMPAIGNS) == ()  # small dimension: clustering would only cost credits


# -- settings -------------------------------------------------------------------------------------

BASE_ENV = {
    "SNOWFLAKE_ACCOUNT": "acme-xy12345",
    "SNOWFLAKE_USER": "PE_LOADER",
    "SNOWFLAKE_DATABASE": "ANALYTICS",
}


def snowflake_warehouse_from_env(env: dict[str, str] | None = None) -> SnowflakeWarehouse:
    """The warehouse ``pe_assets.definitions`` builds for PE_WAREHOUSE=snowflake and ``env``
    (default: the process environment)."""
    settings = Settings.from_env({**TEST_ENV, **(os.environ if env is None else env), "PE_WAREHOUSE": "snowflake"})
    assert settings.snowflake is not None
    return snowflake_warehouse(settings.snowflake)


def test_from_env_uses_envvars_for_credentials() -> None:
    env = {**BASE_ENV, "SNOWFLAKE_PASSWORD": "hunter2-secret", "SNOWFLAKE_WAREHOUSE": "LOAD_WH", "SNOWFLAKE_ROLE": "R"}
    wh = snowflake_warehouse_from_env(env)
    assert isinstance(wh.password, dg.EnvVar) and wh.password == "SNOWFLAKE_PASSWORD"
    assert isinstance(wh.account, dg.EnvVar) and isinstance(wh.user, dg.EnvVar)
    assert wh.private_key is None and wh.private_key_path is None
    assert (wh.database, wh.schema_name, wh.warehouse, wh.role) == ("ANALYTICS", "PE_ANALYTICS", "LOAD_WH", "R")
    assert "hunter2-secret" not in repr(wh)
    assert wh.kind == "snowflake"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SNOWFLAKE_USER": "u", "SNOWFLAKE_DATABASE": "d", "SNOWFLAKE_PASSWORD": "p"}, "SNOWFLAKE_ACCOUNT"),
        ({**BASE_ENV, "SNOWFLAKE_USER": " "}, "SNOWFLAKE_USER is not set"),
        ({k: v for k, v in BASE_ENV.items() if k != "SNOWFLAKE_DATABASE"}, "SNOWFLAKE_DATABASE"),
        (BASE_ENV, "found none of them"),
        ({**BASE_ENV, "SNOWFLAKE_PASSWORD": "p", "SNOWFLAKE_PRIVATE_KEY_PATH": "/k.p8"}, "exactly one"),
        ({**BASE_ENV, "SNOWFLAKE_PASSWORD": "p", "SNOWFLAKE_PRIVATE_KEY_PASSWORD": "x"}, "no private key"),
        ({**BASE_ENV, "SNOWFLAKE_PASSWORD": "p", "SNOWFLAKE_SCHEMA": "pe; drop"}, "SNOWFLAKE_SCHEMA"),
    ],
)
def test_from_env_names_the_bad_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        snowflake_warehouse_from_env(env)
    for value in env.values():
        if value not in ("p", "x"):
            continue
        with pytest.raises(SettingsError) as raised:
            snowflake_warehouse_from_env(env)
        assert f"={value}" not in str(raised.value)  # a secret's value is never echoed


def test_key_pair_settings_reach_the_connector(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    key_file = tmp_path / "rsa_key.p8"
    key_file.write_bytes(pem)
    env = {
        **BASE_ENV,
        "SNOWFLAKE_PRIVATE_KEY_PATH": str(key_file),
        "SNOWFLAKE_PRIVATE_KEY_PASSWORD": "passphrase",
        "SNOWFLAKE_SCHEMA": "PE_STAGING",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    wh = snowflake_warehouse_from_env()
    assert wh.private_key_path == "SNOWFLAKE_PRIVATE_KEY_PATH" and wh.password is None
    args = wh.snowflake_resource()._connection_args  # EnvVars resolved by Dagster, not by our code
    assert args["account"] == "acme-xy12345" and args["user"] == "PE_LOADER"
    assert args["schema"] == "PE_STAGING" and args["paramstyle"] == "qmark"
    assert "password" not in args
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert args["private_key"] == der


# -- writes and reads on fakesnow -----------------------------------------------------------------


def test_replace_partition_is_idempotent_and_touches_only_its_window(warehouse: SnowflakeWarehouse) -> None:
    day1, day2 = step_rows(DAY1, [100, 60, 45]), step_rows(DAY2, [80, 20])
    assert warehouse.replace_partition(STEPS, day1, WINDOW1) == 3
    assert warehouse.replace_partition(STEPS, day1, WINDOW1) == 3  # again: same rows, no duplicates
    warehouse.replace_partition(STEPS, day2, WINDOW2)
    assert len(warehouse.read(STEPS)) == 5

    warehouse.replace_partition(STEPS, step_rows(DAY1, [90]), WINDOW1)  # a shorter day 1
    assert warehouse.read(STEPS, WINDOW1)["contact_count"].tolist() == [90]
    pd.testing.assert_frame_equal(sorted_frame(warehouse.read(STEPS, WINDOW2), "step_sequence"), day2)

    warehouse.replace_partition(STEPS, step_rows(DAY1, [])[:0], WINDOW1)  # an empty frame clears the day
    assert warehouse.read(STEPS, WINDOW1).empty
    assert len(warehouse.read(STEPS)) == 2


def failing_insert(self: SnowflakeWarehouse, spec: object, stage: str) -> str:
    return f"INSERT INTO fact_journey_step (campaign_id) SELECT no_such_column FROM {stage}"


def exception_after_delete(self: SnowflakeWarehouse, spec: object, stage: str) -> str:
    raise RuntimeError("worker killed between DELETE and INSERT")


@pytest.mark.parametrize("sabotage", [failing_insert, exception_after_delete], ids=["bad-insert", "exception"])
def test_failure_after_the_delete_keeps_the_previous_rows(
    warehouse: SnowflakeWarehouse, monkeypatch: pytest.MonkeyPatch, sabotage: object
) -> None:
    before = step_rows(DAY1, [100, 60, 45])
    warehouse.replace_partition(STEPS, before, WINDOW1)
    monkeypatch.setattr(SnowflakeWarehouse, "_insert_sql", sabotage)  # runs after the DELETE
    with pytest.raises(WarehouseError, match="rolled back, previous rows kept"):
        warehouse.replace_partition(STEPS, step_rows(DAY1, [7]), WINDOW1)
    pd.testing.assert_frame_equal(sorted_frame(warehouse.read(STEPS), "step_sequence"), before)
    staged = warehouse.query("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'PE_STAGE_%'")
    assert staged.empty  # the staging table is dropped on failure too


def test_rows_outside_the_window_are_refused_before_anything_is_touched(warehouse: SnowflakeWarehouse) -> None:
    warehouse.replace_partition(STEPS, step_rows(DAY1, [100]), WINDOW1)
    with pytest.raises(WarehouseError, match="outside"):
        warehouse.replace_partition(STEPS, step_rows(DAY2, [5]), WINDOW1)
    assert warehouse.read(STEPS)["contact_count"].tolist() == [100]


def test_round_trip_types_nulls_and_column_order(warehouse: SnowflakeWarehouse) -> None:
    journey = typed_frame(
        JOURNEY,
        [
            {
                "load_timestamp": pd.Timestamp("2024-03-02 01:02:03.456789"),
                "campaign_id": "c1",
                "scorecard_id": sc,
                "extraction_date": pd.Timestamp(DAY1),
                "step_id": f"s{seq}",
                "step_name": "Landing" if seq == 1 else None,
                "step_sequence": seq,
                "contact_count": 10_000_000_000 // seq,  # beyond 32 bits
                "conversion_rate": 1.0 / seq,
                "average_score": None if seq == 2 else 0.25,
                "exit_reason": None,
                "precision": 0.9 if sc else None,
                "recall": 0.8 if sc else None,
                "f1_score": 0.85 if sc else None,
                "actual_conversion_rate": 0.1 if sc else None,
                "model_version": "v3" if sc else None,
                "pending_backfill": pending,
            }
            for seq, sc, pending in [(1, "sc1", True), (2, "sc1", False), (3, None, None)]
        ],
    )
    reordered = journey[list(reversed(journey.columns))]  # inserts go by name, not position
    warehouse.replace_partition(JOURNEY, reordered, WINDOW1)
    back = sorted_frame(warehouse.read(JOURNEY, WINDOW1), "step_sequence")
    pd.testing.assert_frame_equal(back, journey)
    assert str(back["pending_backfill"].dtype) == "boolean"

    performance = typed_frame(
        PERFORMANCE,
        [
            {
                "scorecard_id": "sc1",
                "extraction_date": pd.Timestamp(DAY1),
                "scorecard_name": None,
                "model_version": "v3",
                "retraining_timestamp": pd.NaT,
                "precision": 0.9,
                "recall": 0.8,
                "f1_score": 0.85,
                "auc": 0.91,
                "actual_conversion_rate": 0.1,
                "predicted_conversion_rate": 0.12,
                "pending_backfill": True,
                "extracted_at": pd.Timestamp("2024-03-02 00:30"),
            }
        ],
    )
    warehouse.replace_partition(PERFORMANCE, performance, WINDOW1)
    pd.testing.assert_frame_equal(warehouse.read(PERFORMANCE), performance)

    campaigns = typed_frame(
        CAMPAIGNS,
        [
            {
                "campaign_id": "c1",
                "campaign_name": "Spring",
                "status": "active",
                "scorecard_id": "sc1",
                "created_date": pd.Timestamp("2023-12-01 08:00"),
                "updated_date": pd.NaT,
                "listed_at": pd.Timestamp("2024-03-02 00:00"),
            }
        ],
    )
    warehouse.replace_table(CAMPAIGNS, campaigns)
    warehouse.replace_table(CAMPAIGNS, campaigns)
    pd.testing.assert_frame_equal(warehouse.read(CAMPAIGNS), campaigns)

    answer = warehouse.query(
        "SELECT campaign_id, SUM(contact_count) AS contacts FROM fact_predictive_journey "
        "WHERE extraction_date = CAST(? AS DATE) AND step_sequence >= ? GROUP BY campaign_id",
        [DAY1.isoformat(), 2],
    )
    assert list(answer.columns) == ["campaign_id", "contacts"]  # lower case, as on DuckDB
    assert answer.to_dict("records") == [{"campaign_id": "c1", "contacts": 5_000_000_000 + 3_333_333_333}]


def test_missing_table_reads_empty_and_missing_columns_are_added(warehouse: SnowflakeWarehouse) -> None:
    empty = warehouse.read(STEPS)
    assert empty.empty and list(empty.columns) == STEPS.column_names
    # A table from an older model, without load_timestamp: the next write adds the column.
    old_columns = ", ".join(
        f"{name} {'DATE' if name == 'extraction_date' else 'VARCHAR'}" for name in ["campaign_id", "extraction_date"]
    )
    with warehouse.connection() as conn:
        conn.cursor().execute(f"CREATE TABLE fact_journey_step ({old_columns})")
    warehouse.replace_partition(STEPS, step_rows(DAY1, [3, 2]), WINDOW1)
    assert warehouse.read(STEPS)["load_timestamp"].notna().all()
    columns = warehouse.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'FACT_JOURNEY_STEP'"
    )["column_name"]
    assert sorted(c.lower() for c in columns) == sorted(STEPS.column_names)


def test_data_persists_across_connections_and_patches(tmp_path: Path) -> None:
    with fakesnow_warehouse(tmp_path) as wh:
        wh.replace_partition(STEPS, step_rows(DAY1, [4, 2]), WINDOW1)
    with fakesnow_warehouse(tmp_path) as wh:  # a new fakesnow instance on the same files
        assert wh.read(STEPS)["contact_count"].tolist() == [4, 2]


def test_views_keep_their_grants_and_names_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """fakesnow ignores COPY GRANTS, so the statement itself is checked here."""
    executed: list[str] = []

    class RecordingCursor:
        def execute(self, sql: str, params: object = None) -> RecordingCursor:
            executed.append(sql)
            return self

        def fetchone(self) -> tuple[str]:
            return ("PE_ANALYTICS",)

    class RecordingConnection:
        def cursor(self) -> RecordingCursor:
            return RecordingCursor()

    @contextmanager
    def connection(self: SnowflakeWarehouse) -> Iterator[RecordingConnection]:
        yield RecordingConnection()

    monkeypatch.setattr(SnowflakeWarehouse, "connection", connection)
    wh = SnowflakeWarehouse(account="a", user="u", password="p", database="d")
    wh.create_or_replace_view("funnel_daily", "SELECT 1 AS one;\n")
    assert executed[-1] == "CREATE OR REPLACE VIEW funnel_daily COPY GRANTS AS\nSELECT 1 AS one"
    with pytest.raises(WarehouseError, match="plain identifier"):
        wh.create_or_replace_view("funnel; DROP TABLE x", "SELECT 1")
