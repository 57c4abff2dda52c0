"""The production warehouse: Snowflake, through dagster-snowflake's ``SnowflakeResource``.

Same contract as the DuckDB warehouse (see ``base.py``): a partition or table is replaced in one
transaction, inserts name their columns and cast them to the types the table's Pandera model
declares, and a failed write leaves the previous rows. How, on Snowflake:

1. DDL first, because Snowflake commits any open transaction before a DDL statement: the table
   (from ``create_table_sql``, the same text as ``pe_assets/sql/snowflake_tables.sql``), any column a
   newer model adds, and a temporary staging table that ``write_pandas`` fills with the frame.
2. Then ``BEGIN; DELETE <window>; INSERT INTO t (cols) SELECT CAST(col AS type) ... FROM stage;
   COMMIT`` - or ``ROLLBACK`` on any error.

``dagster_snowflake`` imports Snowpark (several seconds), so it is imported only when a connection
is opened; importing this module is cheap (``python -m pe_assets.warehouse.snowflake_warehouse``
prints the DDL). Credentials reach the connector only as Dagster ``EnvVar``s, resolved by Dagster.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd
from pydantic import Field, field_validator

from pe_assets.config import DEFAULT_SNOWFLAKE_SCHEMA, SnowflakeSettings
from pe_assets.rules import PartitionWindow
from pe_assets.schemas import TABLES, TableSpec, typed_frame
from pe_assets.sql import shipped_sql
from pe_assets.warehouse.base import SqlStatements, WarehouseError, WarehouseResource, typed_columns_sql

if TYPE_CHECKING:
    from dagster_snowflake import SnowflakeResource
    from snowflake.connector import SnowflakeConnection
    from snowflake.connector.cursor import SnowflakeCursor

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = DEFAULT_SNOWFLAKE_SCHEMA
QUERY_TAG = "pe_assets"
DDL_FILE = "snowflake_tables.sql"

# The portable types of ``pe_assets.schemas`` in Snowflake's words. TIMESTAMP is naive UTC, so
# TIMESTAMP_NTZ (never the session-dependent TIMESTAMP/LTZ).
SNOWFLAKE_TYPES: Mapping[str, str] = {
    "VARCHAR": "VARCHAR",
    "BIGINT": "NUMBER(38,0)",
    "DOUBLE": "FLOAT",
    "BOOLEAN": "BOOLEAN",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP_NTZ",
}
# Dashboards filter on days and campaigns: cluster the partitioned tables on those, in this order.
CLUSTER_KEY_CANDIDATES = ("extraction_date", "campaign_id")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

# -- DDL ------------------------------------------------------------------------------------------


def snowflake_type(portable_type: str) -> str:
    """The Snowflake type for one of the specs' portable SQL types."""
    try:
        return SNOWFLAKE_TYPES[portable_type]
    except KeyError:
        raise WarehouseError(f"no Snowflake type for portable SQL type {portable_type!r}") from None


def cluster_columns(spec: TableSpec) -> tuple[str, ...]:
    """The clustering key of a partitioned table: the candidates it has, in order; none otherwise.

    Unpartitioned tables (the campaign dimension) are small: automatic clustering would only cost
    credits there.
    """
    if spec.partition_column is None:
        return ()
    return tuple(name for name in CLUSTER_KEY_CANDIDATES if name in spec.column_names)


def create_table_sql(spec: TableSpec) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for one table, columns and types from its Pandera model."""
    columns = ",\n".join(f"    {column}" for column in spec.column_ddl(snowflake_type))
    cluster = cluster_columns(spec)
    cluster_clause = f"\nCLUSTER BY ({', '.join(cluster)})" if cluster else ""
    return f"CREATE TABLE IF NOT EXISTS {spec.name} (\n{columns}\n){cluster_clause}"


def snowflake_ddl(tables: Mapping[str, TableSpec] = TABLES) -> str:
    """The DDL of every table, as committed in ``pe_assets/sql/snowflake_tables.sql``."""
    header = (
        "-- pe_assets tables on Snowflake. GENERATED from pe_assets/schemas.py (the Pandera models):\n"
        "--   python -m pe_assets.warehouse.snowflake_warehouse > pe_assets/sql/snowflake_tables.sql\n"
        "-- The pipeline runs these itself (CREATE TABLE IF NOT EXISTS, then ALTER TABLE ... ADD COLUMN for\n"
        "-- columns a newer model adds); they are here for review and for creating the tables by hand.\n"
        "-- Timestamps are naive UTC (TIMESTAMP_NTZ); extraction_date is the UTC day of the partition.\n"
    )
    statements = [f"{create_table_sql(spec)};\n" for spec in tables.values()]
    return header + "\n" + "\n".join(statements)


def shipped_ddl() -> str:
    """The committed ``pe_assets/sql/snowflake_tables.sql``, as installed with the package."""
    return shipped_sql(DDL_FILE)


def _check_identifier(name: str, what: str) -> str:
    """Identifiers are spliced into SQL: accept plain unquoted ones only."""
    if not _IDENTIFIER.match(name):
        raise WarehouseError(f"{what} {name!r} is not a plain identifier (letters, digits, _ and $)")
    return name


# -- the resource ---------------------------------------------------------------------------------


class SnowflakeWarehouse(WarehouseResource):
    """pe_assets' tables in one Snowflake schema (PE_WAREHOUSE=snowflake).

    Build it with ``snowflake_warehouse(settings)`` so that the account, user and credentials are
    ``EnvVar``s: the UI and run config then show the variables' names, never their values.
    """

    account: str = Field(description="Snowflake account identifier (SNOWFLAKE_ACCOUNT).")
    user: str = Field(description="Login name (SNOWFLAKE_USER).")
    password: str | None = Field(default=None, description="Password (SNOWFLAKE_PASSWORD); or a private key.")
    private_key: str | None = Field(
        default=None, description="PEM private key, raw or base64 (SNOWFLAKE_PRIVATE_KEY); or a key path."
    )
    private_key_path: str | None = Field(
        default=None, description="Path of a PEM private key file (SNOWFLAKE_PRIVATE_KEY_PATH)."
    )
    private_key_password: str | None = Field(
        default=None, description="Passphrase of an encrypted private key (SNOWFLAKE_PRIVATE_KEY_PASSWORD)."
    )
    database: str = Field(description="Database holding the schema (SNOWFLAKE_DATABASE).")
    schema_name: str = Field(default=DEFAULT_SCHEMA, description="Schema of the tables and views (SNOWFLAKE_SCHEMA).")
    warehouse: str | None = Field(default=None, description="Virtual warehouse to run on (SNOWFLAKE_WAREHOUSE).")
    role: str | None = Field(default=None, description="Role to use (SNOWFLAKE_ROLE).")
    query_tag: str = Field(default=QUERY_TAG, description="QUERY_TAG of every session, for query history.")

    @field_validator("schema_name")
    @classmethod
    def _plain_schema(cls, value: str) -> str:
        # An EnvVar is resolved later; only a literal name can (and must) be checked here.
        if not isinstance(value, dg.EnvVar):
            _check_identifier(value, "SNOWFLAKE_SCHEMA")
        return value

    @property
    def kind(self) -> str:
        return "snowflake"

    # -- connections ------------------------------------------------------------------------------

    def snowflake_resource(self) -> SnowflakeResource:
        """dagster-snowflake's ``SnowflakeResource`` for these settings, with every ``EnvVar`` resolved.

        Inside a run Dagster has already resolved this resource's fields; outside one (scripts,
        tests) they may still be ``EnvVar``s, which ``process_config_and_initialize`` resolves from
        the environment, so secret values never pass through this module's code.
        """
        from dagster_snowflake import SnowflakeResource  # lazy: imports Snowpark (seconds)

        settings: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "password": self.password,
            "private_key": self.private_key,
            "private_key_path": self.private_key_path,
            "private_key_password": self.private_key_password,
            "database": self.database,
            "schema": self.schema_name,
            "warehouse": self.warehouse,
            "role": self.role,
        }
        resource = SnowflakeResource(
            **{key: value for key, value in settings.items() if value is not None},
            # qmark: the same ``?`` placeholders as DuckDB, bound server-side (no client-side quoting).
            paramstyle="qmark",
            additional_snowflake_connection_args={"session_parameters": {"QUERY_TAG": self.query_tag}},
        )
        return resource.process_config_and_initialize()

    @contextmanager
    def connection(self) -> Iterator[SnowflakeConnection]:
        """A Snowflake connection, closed afterwards whether or not the block raised."""
        with self.snowflake_resource().get_connection() as conn:
            try:
                yield conn
            except BaseException:
                # SnowflakeResource.get_connection closes only on success; do not leak the session.
                with suppress(Exception):
                    conn.close()
                raise

    # -- writes -----------------------------------------------------------------------------------

    def _replace(self, spec: TableSpec, frame: pd.DataFrame, delete_sql: str, params: list[object]) -> int:
        with self.connection() as conn:
            cursor = conn.cursor()
            # DDL commits implicitly on Snowflake, so all of it happens before BEGIN.
            self._ensure_schema(cursor)
            self._ensure_table(cursor, spec)
            stage = self._stage_frame(conn, spec, frame) if len(frame) else None
            try:
                cursor.execute("BEGIN")
                try:
                    cursor.execute(delete_sql, params or None)
                    if stage is not None:
                        cursor.execute(self._insert_sql(spec, stage))
                    cursor.execute("COMMIT")
                except Exception as exc:
                    with suppress(Exception):  # a lost session rolls back by itself
                        cursor.execute("ROLLBACK")
                    raise WarehouseError(f"{spec.name}: write rolled back, previous rows kept: {exc}") from exc
            finally:
                if stage is not None:
                    with suppress(Exception):  # temporary anyway: it goes with the session
                        cursor.execute(f"DROP TABLE IF EXISTS {stage}")
        return len(frame)

    def _type_name(self, portable_type: str) -> str:
        return snowflake_type(portable_type)

    @contextmanager
    def _statements(self, spec: TableSpec) -> Iterator[SqlStatements]:
        with self.connection() as conn:
            cursor = conn.cursor()
            # DDL commits implicitly on Snowflake: the table exists before any BEGIN.
            self._ensure_schema(cursor)
            self._ensure_table(cursor, spec)
            yield _SnowflakeStatements(cursor)

    def _insert_sql(self, spec: TableSpec, stage: str) -> str:
        """Insert by column name, each cast to the model's type (never by position)."""
        columns = ", ".join(spec.column_names)
        casts = typed_columns_sql(spec, snowflake_type)
        return f"INSERT INTO {spec.name} ({columns}) SELECT {casts} FROM {stage}"

    def _stage_frame(self, conn: SnowflakeConnection, spec: TableSpec, frame: pd.DataFrame) -> str:
        """Load the frame into a new temporary table with ``write_pandas``; return the table's name."""
        from snowflake.connector import pandas_tools  # looked up per call, so fakesnow's patch applies

        stage = f"PE_STAGE_{spec.name}_{uuid.uuid4().hex[:12]}".upper()
        varchar = [name for name, sql_type in spec.columns if sql_type == "VARCHAR"]
        # A text column that is all NULL would stage as parquet's null type; pandas' string dtype
        # keeps it a string. Upper-case names are what unquoted identifiers resolve to.
        staged = frame.astype(dict.fromkeys(varchar, "string")).rename(columns=str.upper)
        success, _, rows, _ = pandas_tools.write_pandas(
            conn,
            staged,
            stage,
            auto_create_table=True,
            table_type="temporary",
            quote_identifiers=False,
            use_logical_type=True,  # datetimes stage as TIMESTAMP_NTZ, not epoch numbers
        )
        if not success or rows != len(frame):
            raise WarehouseError(f"{spec.name}: staged {rows} of {len(frame)} rows; table left untouched")
        return stage

    def _ensure_schema(self, cursor: SnowflakeCursor) -> None:
        """Use the configured schema, creating it if the connection found none (first deployment)."""
        cursor.execute("SELECT CURRENT_SCHEMA()")
        row = cursor.fetchone()
        if row and row[0]:
            return
        schema = _check_identifier(self.schema_name, "SNOWFLAKE_SCHEMA")
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        cursor.execute(f"USE SCHEMA {schema}")

    def _ensure_table(self, cursor: SnowflakeCursor, spec: TableSpec) -> None:
        """Create the table from its model, or add the columns a newer model declares."""
        existing = self._existing_columns(cursor, spec.name)
        if not existing:
            cursor.execute(create_table_sql(spec))
            return
        for name, sql_type in spec.columns:
            if name.upper() not in existing:
                cursor.execute(f"ALTER TABLE {spec.name} ADD COLUMN {name} {snowflake_type(sql_type)}")

    @staticmethod
    def _existing_columns(cursor: SnowflakeCursor, table: str) -> set[str]:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = CURRENT_SCHEMA() AND table_name = ?",
            [table.upper()],
        )
        return {str(row[0]).upper() for row in cursor.fetchall()}

    # -- views ------------------------------------------------------------------------------------

    def create_or_replace_view(self, name: str, select_sql: str) -> None:
        """``CREATE OR REPLACE VIEW name COPY GRANTS AS select_sql`` in the warehouse's schema.

        COPY GRANTS: replacing a view would otherwise drop the SELECT grants that BI roles hold on it.
        """
        _check_identifier(name, "view name")
        with self.connection() as conn:
            cursor = conn.cursor()
            self._ensure_schema(cursor)
            cursor.execute(f"CREATE OR REPLACE VIEW {name} COPY GRANTS AS\n{select_sql.strip().rstrip(';')}")

    # -- reads ------------------------------------------------------------------------------------

    def read(self, spec: TableSpec, window: PartitionWindow | None = None) -> pd.DataFrame:
        sql = f"SELECT {', '.join(spec.column_names)} FROM {spec.name}"
        params: list[object] = []
        if window is not None and spec.partition_column:
            sql += f" WHERE {window.sql_condition(spec.partition_column)}"
            params = window.sql_params
        with self.connection() as conn:
            cursor = conn.cursor()
            if not self._existing_columns(cursor, spec.name):
                return typed_frame(spec, [])
            cursor.execute(sql, params or None)
            frame = _fetch_frame(cursor)
        return typed_frame(spec, frame)

    def query(self, sql: str, parameters: list[object] | None = None) -> pd.DataFrame:
        with self.connection() as conn:
            return _SnowflakeStatements(conn.cursor()).frame(sql, parameters)


class _SnowflakeStatements:
    def __init__(self, cursor: SnowflakeCursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql, params or None)
        return list(self._cursor.fetchall()) if self._cursor.description else []

    def frame(self, sql: str, params: list[object] | None = None) -> pd.DataFrame:
        self._cursor.execute(sql, params or None)
        return _fetch_frame(self._cursor)


def _fetch_frame(cursor: SnowflakeCursor) -> pd.DataFrame:
    """The cursor's rows as a frame with lower-case column names (Snowflake answers in upper case)."""
    names = [str(column.name).lower() for column in cursor.description or []]
    try:
        frame = cursor.fetch_pandas_all()
    except Exception:  # e.g. NotSupportedError: results not in Arrow format (SHOW, DESCRIBE, ...)
        return pd.DataFrame(cursor.fetchall(), columns=names)
    if frame.columns.empty and names:  # some connector versions drop the columns of an empty result
        return pd.DataFrame(columns=names)
    frame.columns = [str(name).lower() for name in frame.columns]
    return frame


# -- settings -------------------------------------------------------------------------------------


def snowflake_warehouse(settings: SnowflakeSettings) -> SnowflakeWarehouse:
    """The Snowflake warehouse for the SNOWFLAKE_* settings (``pe_assets.config``).

    Account, user and credentials become ``EnvVar``s, so their values never pass through here.
    """
    secrets = {role: dg.EnvVar(var) for role, var in settings.secret_vars.items()}
    return SnowflakeWarehouse(
        account=dg.EnvVar(settings.account_var),
        user=dg.EnvVar(settings.user_var),
        password=secrets.get("password"),
        private_key=secrets.get("private_key"),
        private_key_path=secrets.get("private_key_path"),
        private_key_password=secrets.get("private_key_password"),
        database=settings.database,
        schema_name=settings.schema,
        warehouse=settings.warehouse,
        role=settings.role,
    )


def main() -> None:
    """Print the tables' DDL (``python -m pe_assets.warehouse.snowflake_warehouse``)."""
    print(snowflake_ddl(), end="")


if __name__ == "__main__":
    main()
