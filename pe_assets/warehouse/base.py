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
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from dagster import ConfigurableResource

from pe_assets.rules import PartitionWindow
from pe_assets.schemas import TableSpec, typed_frame


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
