"""What every warehouse offers the assets: replace a partition or a table atomically, read back.

Dagster's stock DB I/O managers delete a partition and insert the new rows outside any
transaction, and insert by column position, so a failed insert empties the partition and a
reordered frame lands in the wrong columns. Here every write is one transaction (delete and
insert commit together or not at all), inserts name their columns and cast each to the type
the table's Pandera model declares, and rows outside the partition window are refused before
anything is touched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
from dagster import ConfigurableResource

from pe_assets.rules import PartitionWindow
from pe_assets.schema_sql import ROW_COLUMN, failure_cases_sql, failure_count_sql, staged_report
from pe_assets.schemas import TableSpec, ValidationReport, typed_frame


class WarehouseError(RuntimeError):
    """A write was refused or failed; the table is as it was before it."""


class WarehouseResource(ConfigurableResource, ABC):
    """A warehouse that holds pe_assets' tables; DuckDB or Snowflake."""

    @property
    @abstractmethod
    def kind(self) -> str:
        """'duckdb' or 'snowflake', shown as the assets' kind in the UI."""

    @contextmanager
    def session(self) -> Iterator[None]:
        """A block of many reads and writes (a step's chunks) that may share one connection.

        Every write in it still commits on its own. The default shares nothing; DuckDB holds one
        connection, so a ranged run opens and closes (checkpoints) its file once per step, not per chunk.
        """
        yield

    def replace_partition(self, spec: TableSpec, frame: pd.DataFrame, window: PartitionWindow) -> int:
        """Make the table's rows in ``window`` exactly ``frame``'s rows, in one transaction."""
        if spec.partition_column is None:
            raise WarehouseError(f"{spec.name} is not partitioned; use replace_table")
        frame = check_frame_in_window(spec, frame, window)
        delete = f"DELETE FROM {spec.name} WHERE {window.sql_condition(spec.partition_column)}"
        return self._replace(spec, frame, delete, window.sql_params)

    def replace_table(self, spec: TableSpec, frame: pd.DataFrame) -> int:
        """Make the whole table exactly ``frame``'s rows, in one transaction."""
        frame = check_frame_in_window(spec, frame, None)
        return self._replace(spec, frame, f"DELETE FROM {spec.name}", [])

    @abstractmethod
    def _replace(self, spec: TableSpec, frame: pd.DataFrame, delete_sql: str, params: list[object]) -> int:
        """Run ``delete_sql`` and insert ``frame`` (already checked) in one transaction; rows written."""

    def replace_partition_with_query(
        self, spec: TableSpec, select_sql: str, params: list[object], window: PartitionWindow
    ) -> tuple[ValidationReport, int]:
        """Make the table's rows in ``window`` exactly the rows ``select_sql`` returns (``params``
        bound), checked against the table's model in the warehouse (``pe_assets.schema_sql``): the
        rows never leave it. Returns the checks' report and the rows written (0: a check failed,
        nothing written).

        One transaction: delete the window, insert the rows, check the window's rows, then commit,
        or roll back (nobody ever sees rows that fail). Only a failure (a check, rows outside the
        window, an error) stages the rows, numbered in a temporary table, to name each failing row
        as Pandera would; a failure no check explains is raised as a ``WarehouseError``.
        """
        if spec.partition_column is None:
            raise WarehouseError(f"{spec.name} is not partitioned")
        write = QueryWrite.of(spec, select_sql, window, self._type_name)
        error: Exception | None = None
        with self._statements(spec) as statements:
            statements.execute("BEGIN")
            try:
                statements.execute(write.delete, window.sql_params)
                inserted = int(statements.execute(write.insert, params)[0][0])
                in_window, failing, repeated = statements.execute(write.check, window.sql_params)[0]
                if not (failing or repeated) and inserted == in_window:
                    statements.execute("COMMIT")
                    return ValidationReport(table=spec.name, rows=inserted, failure_cases=pd.DataFrame()), inserted
                statements.execute("ROLLBACK")
            except Exception as exc:  # e.g. a NULL refused by a NOT NULL column: reported below if a check fails
                error = exc
                with suppress(Exception):  # a lost session rolls back by itself
                    statements.execute("ROLLBACK")
            statements.execute(write.stage, params)
            try:
                staged = int(statements.execute(write.staged_rows)[0][0])
                cases = statements.frame(write.failures)
            finally:
                statements.execute(write.drop)
        report = staged_report(spec, staged, cases)
        if not report.passed:
            return report, 0
        if error is not None:
            raise WarehouseError(f"{spec.name}: write rolled back, previous rows kept: {error}") from error
        raise WarehouseError(  # every row is valid, but some lie outside the window
            f"{spec.name}: {staged - in_window} rows have {spec.partition_column} outside "
            f"{window.start}..{window.end}; refusing to write"
        )

    @abstractmethod
    def _statements(self, spec: TableSpec) -> AbstractContextManager[SqlStatements]:
        """A session in which ``spec``'s table exists (created or extended first) to run statements in."""

    def _type_name(self, portable_type: str) -> str:
        """The warehouse's spelling of a portable SQL type (``TableSpec.columns``)."""
        return portable_type

    @abstractmethod
    def read(self, spec: TableSpec, window: PartitionWindow | None = None) -> pd.DataFrame:
        """The table's rows (in ``window`` if given), typed as its model says; empty if no table."""

    @abstractmethod
    def create_or_replace_view(self, name: str, select_sql: str) -> None:
        """CREATE OR REPLACE VIEW ``name`` AS ``select_sql``."""

    @abstractmethod
    def query(self, sql: str, parameters: list[object] | None = None) -> pd.DataFrame:
        """Run a read-only query and return its rows (column names lower case)."""

    def has_tables(self, *names: str) -> bool:
        """Whether every named table exists yet (checks and sensors run before the first write too)."""
        found = self.query(
            "SELECT lower(table_name) AS name FROM information_schema.tables "
            f"WHERE lower(table_name) IN ({', '.join('?' for _ in names)})",
            [name.lower() for name in names],
        )
        return set(found["name"]) >= {name.lower() for name in names}


def check_frame_in_window(spec: TableSpec, frame: pd.DataFrame, window: PartitionWindow | None) -> pd.DataFrame:
    """The frame in table order and dtypes; refuses rows that would land outside ``window``."""
    if list(frame.columns) != spec.column_names:
        extra = sorted(set(frame.columns) - set(spec.column_names))
        missing = [c for c in spec.column_names if c not in frame.columns]
        if extra or missing:
            raise WarehouseError(
                f"{spec.name}: frame columns differ from the schema (extra {extra}, missing {missing})"
            )
    frame = typed_frame(spec, frame)
    if window is not None and spec.partition_column and len(frame):
        # Compared as instants (a day's rows lie in [start 00:00, end 00:00)): no date object per row.
        instants = frame[spec.partition_column]
        outside = frame[(instants < pd.Timestamp(window.start)) | (instants >= pd.Timestamp(window.end))]
        if len(outside):
            raise WarehouseError(
                f"{spec.name}: {len(outside)} rows have {spec.partition_column} outside "
                f"{window.start}..{window.end}; refusing to write"
            )
    return frame


def typed_columns_sql(spec: TableSpec, type_name: Callable[[str], str] = str) -> str:
    """``CAST(col AS type) AS col, ...`` for every column of the table, in its order: inserts go by
    name, each value cast to the type its model declares (``type_name`` spells it per warehouse)."""
    return ", ".join(f"CAST({name} AS {type_name(sql_type)}) AS {name}" for name, sql_type in spec.columns)


class SqlStatements(Protocol):
    """Statements run in one warehouse session (``?`` parameters)."""

    def execute(self, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (none for DDL and DML)."""
        ...

    def frame(self, sql: str, params: list[object] | None = None) -> pd.DataFrame:
        """Run a query; its rows as a frame with lower-case column names."""
        ...


@dataclass(frozen=True)
class QueryWrite:
    """The statements of ``replace_partition_with_query``, the same text on every warehouse."""

    #: Delete the window's rows (bind the window); insert the query's rows (bind the query's parameters).
    delete: str
    insert: str
    #: One row over the window's rows once inserted: rows, failing_rows, repeated_keys (bind the window).
    check: str
    #: Only after a failure: the query's rows numbered in a temporary table, their failure cases, dropped.
    stage: str
    staged_rows: str
    failures: str
    drop: str

    @classmethod
    def of(
        cls, spec: TableSpec, select_sql: str, window: PartitionWindow, type_name: Callable[[str], str]
    ) -> QueryWrite:
        stage = f"pe_stage_{spec.name}"
        typed_rows = f"SELECT {typed_columns_sql(spec, type_name)} FROM ({select_sql.strip().rstrip(';')}) query_rows"
        # Snowflake numbers rows only in a given order: the table's key, else every column.
        order = ", ".join(spec.model.to_schema().unique or spec.column_names)
        columns = ", ".join(spec.column_names)
        in_window = window.sql_condition(spec.partition_column or "")
        return cls(
            delete=f"DELETE FROM {spec.name} WHERE {in_window}",
            insert=f"INSERT INTO {spec.name} ({columns}) {typed_rows}",
            check=(
                f"WITH pe_rows AS (SELECT {columns} FROM {spec.name} WHERE {in_window}) "
                f"SELECT COUNT(*) AS row_count, {failure_count_sql(spec, 'pe_rows')} FROM pe_rows"
            ),
            stage=(
                f"CREATE OR REPLACE TEMPORARY TABLE {stage} AS SELECT *, ROW_NUMBER() OVER (ORDER BY {order}) - 1 "
                f"AS {ROW_COLUMN} FROM ({typed_rows}) typed_rows"
            ),
            staged_rows=f"SELECT COUNT(*) FROM {stage}",
            failures=failure_cases_sql(spec, stage),
            drop=f"DROP TABLE IF EXISTS {stage}",
        )
