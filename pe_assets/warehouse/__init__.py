"""Warehouse wiring: atomic, schema-stable table writes for DuckDB (embedded) and Snowflake."""

from pe_assets.warehouse.base import WarehouseError, WarehouseResource
from pe_assets.warehouse.duckdb_warehouse import DuckDBWarehouse

__all__ = ["DuckDBWarehouse", "WarehouseError", "WarehouseResource"]
