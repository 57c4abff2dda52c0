"""Run pe_assets' Snowflake path against fakesnow (an in-process Snowflake emulator on DuckDB).

    from pe_dev.fakesnow import fakesnow_warehouse

    def test_something(tmp_path):
        with fakesnow_warehouse(tmp_path) as warehouse:  # a SnowflakeWarehouse
            resources = pipeline_resources(sim, tmp_path, warehouse=warehouse)
            ...

Or use the ``snowflake_warehouse`` pytest fixture (import it into the test module or a conftest).

``fakesnow.patch()`` replaces ``snowflake.connector.connect`` and
``snowflake.connector.pandas_tools.write_pandas`` where they are defined, which covers every module
that looks them up at call time: dagster-snowflake's ``SnowflakeResource`` and our warehouse (which
looks ``pandas_tools.write_pandas`` up per call for exactly this reason). No extra patch targets:
dagster-snowflake-pandas, whose type handler imported the name, is no longer a dependency.

Data lives in DuckDB files under ``<tmp_path>/fakesnow`` (``db_path``), so every connection opened
while the patch is active sees the same data, and a later patch on the same directory sees it too.
fakesnow runs in this process only: its server mode cannot run ``write_pandas`` (no stage PUT),
and two processes cannot open the same DuckDB file for writing, so use Dagster's in-process
executor (``execute_in_process``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pe_assets.warehouse.snowflake_warehouse import DEFAULT_SCHEMA, SnowflakeWarehouse

FAKESNOW_DATABASE = "PE_TEST"


@contextmanager
def fakesnow_patched(db_path: Path) -> Iterator[None]:
    """fakesnow active (the Snowflake connector patched), data in ``db_path``."""
    import fakesnow  # imported here: sqlglot and the connector take a few seconds

    db_path.mkdir(parents=True, exist_ok=True)
    sqlglot_logger = logging.getLogger("sqlglot")
    previous_level = sqlglot_logger.level
    # sqlglot warns "Unsupported property clusterproperty" for CLUSTER BY, which fakesnow ignores.
    sqlglot_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # DuckDB's note on fakesnow's Arrow fetches; noise, not a problem of ours.
            warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)
            with fakesnow.patch(db_path=db_path):
                yield
    finally:
        sqlglot_logger.setLevel(previous_level)


@contextmanager
def fakesnow_warehouse(
    tmp_path: Path, *, database: str = FAKESNOW_DATABASE, schema: str = DEFAULT_SCHEMA
) -> Iterator[SnowflakeWarehouse]:
    """A ``SnowflakeWarehouse`` talking to fakesnow, its data in ``tmp_path / "fakesnow"``."""
    with fakesnow_patched(tmp_path / "fakesnow"):
        # fakesnow ignores credentials; a password keeps dagster-snowflake's auth check happy.
        yield SnowflakeWarehouse(
            account="fakesnow",
            user="fake",
            password="fake",
            database=database,
            schema_name=schema,
        )


@pytest.fixture
def snowflake_warehouse(tmp_path: Path) -> Iterator[SnowflakeWarehouse]:
    """Pytest fixture: ``fakesnow_warehouse(tmp_path)`` for the duration of one test."""
    with fakesnow_warehouse(tmp_path) as warehouse:
        yield warehouse
