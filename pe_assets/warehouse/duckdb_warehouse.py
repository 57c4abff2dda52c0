"""The embedded warehouse: one DuckDB file.

DuckDB allows one writing process per file, and Dagster runs steps in parallel processes, so
every connection is taken under an inter-process file lock beside the database: writers queue
instead of failing on DuckDB's own lock. Closing the file's connection checkpoints it (writes the
changed row groups, compressed): a step that writes many chunks opens a ``session`` and keeps one
connection, and the lock, until its last chunk is written, instead of paying that once per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from filelock import FileLock, Timeout
from pydantic import Field, PrivateAttr

from pe_assets.rules import PartitionWindow
from pe_assets.schemas import TableSpec, typed_frame
from pe_assets.warehouse.base import SqlStatements, WarehouseError, WarehouseResource, typed_columns_sql

#: DuckDB's buffer pool for a session's connection (it spills to the file or temp files beyond it).
SESSION_MEMORY_LIMIT = "128MB"


class DuckDBWarehouse(WarehouseResource):
    """pe_assets' tables in a DuckDB file (the embedded default)."""

    path: str = Field(description="Path of the DuckDB database file (PE_DUCKDB_PATH).")
    lock_timeout_seconds: float = Field(
        default=900.0, description="How long a step waits for another process's write to finish."
    )

    @property
    def kind(self) -> str:
        return "duckdb"

    #: The open session's connection; its threads (a chunk built ahead) get cursors of it.
    _session: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)

    @contextmanager
    def session(self) -> Iterator[None]:
        if self._session is not None:  # nested: the outer session keeps the connection
            yield
            return
        with self._locked_connection() as con:
            # A long-lived connection keeps the pages it touched cached (up to 80 % of RAM by
            # default): a step's memory must stay bounded by its chunk, not by the range written.
            con.execute(f"SET memory_limit = '{SESSION_MEMORY_LIMIT}'")
            self._session = con
            try:
                yield
            finally:
                self._session = None

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection held under the file's inter-process lock (a cursor of the open session's)."""
        if self._session is not None:
            cursor = self._session.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
            return
        with self._locked_connection() as con:
            yield con

    @contextmanager
    def _locked_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{self.path}.lock")
        try:
            lock.acquire(timeout=self.lock_timeout_seconds)
        except Timeout:
            raise WarehouseError(
                f"DuckDB file {self.path} stayed locked by another process for {self.lock_timeout_seconds:.0f} s"
            ) from None
        try:
            con = duckdb.connect(self.path)
            try:
                yield con
            finally:
                con.close()
        finally:
            lock.release()

    def _replace(self, spec: TableSpec, frame: pd.DataFrame, delete_sql: str, params: list[object]) -> int:
        casts = typed_columns_sql(spec)
        columns = ", ".join(spec.column_names)
        with self.connection() as con:
            self._ensure_table(con, spec)
            con.register("incoming_frame", frame)
            con.begin()
            try:
                con.execute(delete_sql, params)
                con.execute(f"INSERT INTO {spec.name} ({columns}) SELECT {casts} FROM incoming_frame")
                con.commit()
            except Exception as exc:
                con.rollback()
                raise WarehouseError(f"{spec.name}: write rolled back, previous rows kept: {exc}") from exc
            finally:
                con.unregister("incoming_frame")
        return len(frame)

    @contextmanager
    def _statements(self, spec: TableSpec) -> Iterator[SqlStatements]:
        with self.connection() as con:
            self._ensure_table(con, spec)
            yield _DuckDBStatements(con)

    def _ensure_table(self, con: duckdb.DuckDBPyConnection, spec: TableSpec) -> None:
        """Create the table from its model, or add columns a newer model declares."""
        existing = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                "AND table_schema = current_schema()",
                [spec.name],
            ).fetchall()
        )
        if not existing:
            ddl = ", ".join(spec.column_ddl())
            con.execute(f"CREATE TABLE IF NOT EXISTS {spec.name} ({ddl})")
            return
        for name, sql_type in spec.columns:
            if name not in existing:  # nullable: rows written before the column existed have no value
                con.execute(f"ALTER TABLE {spec.name} ADD COLUMN {name} {sql_type}")

    def read(self, spec: TableSpec, window: PartitionWindow | None = None) -> pd.DataFrame:
        columns = ", ".join(spec.column_names)
        sql = f"SELECT {columns} FROM {spec.name}"
        params: list[object] = []
        if window is not None and spec.partition_column:
            sql += f" WHERE {window.sql_condition(spec.partition_column)}"
            params = window.sql_params
        with self.connection() as con:
            if not _table_exists(con, spec.name):
                return typed_frame(spec, [])
            frame = con.execute(sql, params).df()
        return typed_frame(spec, frame)

    def create_or_replace_view(self, name: str, select_sql: str) -> None:
        with self.connection() as con:
            con.execute(f"CREATE OR REPLACE VIEW {name} AS\n{select_sql}")

    def query(self, sql: str, parameters: list[object] | None = None) -> pd.DataFrame:
        with self.connection() as con:
            return _DuckDBStatements(con).frame(sql, parameters)


class _DuckDBStatements:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def execute(self, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        result = self._con.execute(sql, params or [])
        return result.fetchall() if result.description else []

    def frame(self, sql: str, params: list[object] | None = None) -> pd.DataFrame:
        frame = self._con.execute(sql, params or []).df()
        frame.columns = [str(c).lower() for c in frame.columns]
        return frame


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = current_schema()",
        [name],
    ).fetchone()
    return bool(row and row[0])
