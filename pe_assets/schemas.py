"""One Pandera model per warehouse table.

Each model is the single definition of its table: the checks run on every frame before it is
written, and the warehouse writer takes column order and SQL types from it (see ``table_spec``),
so a table's shape is stated once. Timestamps are naive UTC; ``extraction_date`` is a DATE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pandera.dtypes as pandera_dtypes
import pandera.pandas as pa
from pandera.engines import pandas_engine
from pandera.typing import Series


@pandas_engine.Engine.register_dtype
@pandera_dtypes.immutable
class Text(pandas_engine.NpString):
    """``str``, with Pandera's rule unchanged (every non-null value is a Python ``str``), checked by
    pandas' C type inference first: the stock check calls a Python lambda per value, ~1 s per
    million rows and text column. Only a column that is not all text runs the per-value check, so
    failure cases still name each offending row."""

    def check(
        self, pandera_dtype: pandera_dtypes.DataType, data_container: pd.Series | None = None
    ) -> bool | Iterable[bool]:
        if data_container is not None and pd.api.types.infer_dtype(data_container, skipna=True) in ("string", "empty"):
            return True
        return super().check(pandera_dtype, data_container)


@pandas_engine.Engine.register_dtype
@pandera_dtypes.immutable(init=True)
class UtcDateTime(pandas_engine.DateTime):
    """``pd.Timestamp`` (naive ``datetime64[ns]``, UTC by convention), with Pandera's rule unchanged:
    a column already of that dtype is taken as it is. The stock coercion sends it through
    ``pd.to_datetime``, whose format sniffing boxes 10,000 values as Python objects first: ~25 ms
    per column and frame, more than all the column's checks. Any other column is coerced as before."""

    def coerce(self, data_container: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
        if isinstance(data_container, pd.Series) and data_container.dtype == self.type:
            return data_container
        return super().coerce(data_container)


CAMPAIGN_STATUSES = ("active", "paused", "archived")
RATE = {"ge": 0.0, "le": 1.0}
#: A step's share of its funnel's entry count. The seed contract's rates lie in [0, 1] (its
#: transform quarantines others); journey aggregates count events, so count / qualified can pass 1
#: or be undefined (qualified 0): kept as served, NULL when undefined, and a WARN check flags > 1.
STEP_RATE = {"ge": 0.0}
DATE_COLUMN = {"sql_type": "DATE"}


class DimPredictiveCampaign(pa.DataFrameModel):
    """One row per campaign ever listed, in its latest known state (archived ones included)."""

    campaign_id: Series[Text] = pa.Field(unique=True)
    campaign_name: Series[Text] = pa.Field(nullable=True)
    status: Series[Text] = pa.Field(isin=CAMPAIGN_STATUSES)
    scorecard_id: Series[Text] = pa.Field(nullable=True)
    created_date: Series[UtcDateTime] = pa.Field(nullable=True, coerce=True)
    updated_date: Series[UtcDateTime] = pa.Field(nullable=True, coerce=True)
    listed_at: Series[UtcDateTime] = pa.Field(coerce=True)

    class Config:
        strict = True
        ordered = True


class DimActionMap(pa.DataFrameModel):
    """Journey aggregates source: one row per Genesys action map, in its latest listed state.

    ``dim_predictive_campaign`` holds the columns every source shares (campaign_id = action map id);
    this table keeps the action map's own fields.
    """

    action_map_id: Series[Text] = pa.Field(unique=True)
    display_name: Series[Text] = pa.Field(nullable=True)
    is_active: Series[pd.BooleanDtype] = pa.Field(coerce=True)
    version: Series[pd.Int64Dtype] = pa.Field(nullable=True, coerce=True)
    media_type: Series[Text] = pa.Field(nullable=True)
    action_template_id: Series[Text] = pa.Field(nullable=True)
    activation_type: Series[Text] = pa.Field(nullable=True)
    activation_delay_seconds: Series[pd.Int64Dtype] = pa.Field(nullable=True, coerce=True)
    weight: Series[pd.Int64Dtype] = pa.Field(nullable=True, coerce=True)
    ignore_frequency_cap: Series[pd.BooleanDtype] = pa.Field(nullable=True, coerce=True)
    trigger_segment_ids: Series[Text] = pa.Field(nullable=True)  # JSON array text
    start_date: Series[UtcDateTime] = pa.Field(nullable=True, coerce=True)
    end_date: Series[UtcDateTime] = pa.Field(nullable=True, coerce=True)
    created_date: Series[UtcDateTime] = pa.Field(nullable=True, coerce=True)
    modified_date: Series[UtcDateTime] = pa.Field(nullable=True, coerce=True)
    listed_at: Series[UtcDateTime] = pa.Field(coerce=True)

    class Config:
        strict = True
        ordered = True


class FactJourneyStep(pa.DataFrameModel):
    """One row per funnel step, campaign and UTC day, from the day's latest complete extraction."""

    campaign_id: Series[Text]
    extraction_date: Series[UtcDateTime] = pa.Field(coerce=True, metadata=DATE_COLUMN)
    step_id: Series[Text] = pa.Field(str_length={"min_value": 1})
    step_name: Series[Text] = pa.Field(nullable=True)
    step_sequence: Series[int] = pa.Field(ge=1, coerce=True)
    contact_count: Series[int] = pa.Field(ge=0, coerce=True)
    conversion_rate: Series[float] = pa.Field(**STEP_RATE, nullable=True, coerce=True)
    average_score: Series[float] = pa.Field(**RATE, nullable=True, coerce=True)
    exit_reason: Series[Text] = pa.Field(nullable=True)
    scorecard_id: Series[Text] = pa.Field(nullable=True)
    extracted_at: Series[UtcDateTime] = pa.Field(coerce=True)
    load_timestamp: Series[UtcDateTime] = pa.Field(coerce=True)

    class Config:
        strict = True
        ordered = True
        unique = ["campaign_id", "extraction_date", "step_id"]

    @pa.dataframe_check
    @classmethod
    def step_sequence_unique_per_day(cls, df: pd.DataFrame) -> Series[bool]:
        """A day's funnel positions never repeat."""
        return ~df.duplicated(["campaign_id", "extraction_date", "step_sequence"], keep=False)

    @pa.check("exit_reason", name="exit_reason_not_empty")
    @classmethod
    def exit_reason_not_empty(cls, exit_reason: Series[Text]) -> Series[bool]:
        """No exit reason is NULL, never ''."""
        return exit_reason.isna() | (exit_reason != "")


class RejectedJourneyStep(pa.DataFrameModel):
    """Steps that cannot enter the facts (no stepId, no contactCount, bad types), kept with why."""

    campaign_id: Series[Text]
    extraction_date: Series[UtcDateTime] = pa.Field(coerce=True, metadata=DATE_COLUMN)
    step_sequence: Series[int] = pa.Field(ge=1, coerce=True)
    reason: Series[Text]
    raw_step: Series[Text]
    extracted_at: Series[UtcDateTime] = pa.Field(coerce=True)
    load_timestamp: Series[UtcDateTime] = pa.Field(coerce=True)

    class Config:
        strict = True
        ordered = True
        unique = ["campaign_id", "extraction_date", "step_sequence"]


class FactScorecardPerformance(pa.DataFrameModel):
    """Append-only history: one row per scorecard, UTC day and extraction."""

    scorecard_id: Series[Text]
    extraction_date: Series[UtcDateTime] = pa.Field(coerce=True, metadata=DATE_COLUMN)
    scorecard_name: Series[Text] = pa.Field(nullable=True)
    model_version: Series[Text]
    retraining_timestamp: Series[UtcDateTime] = pa.Field(nullable=True, coerce=True)
    precision: Series[float] = pa.Field(**RATE, coerce=True)
    recall: Series[float] = pa.Field(**RATE, coerce=True)
    f1_score: Series[float] = pa.Field(**RATE, coerce=True)
    auc: Series[float] = pa.Field(**RATE, coerce=True)
    actual_conversion_rate: Series[float] = pa.Field(**RATE, coerce=True)
    predicted_conversion_rate: Series[float] = pa.Field(**RATE, coerce=True)
    pending_backfill: Series[bool] = pa.Field(coerce=True)
    extracted_at: Series[UtcDateTime] = pa.Field(coerce=True)

    class Config:
        strict = True
        ordered = True
        unique = ["scorecard_id", "extraction_date", "extracted_at"]


class FactScorecardScoreDistribution(pa.DataFrameModel):
    """Contacts per score bucket, per scorecard snapshot (same keys as the performance history)."""

    scorecard_id: Series[Text]
    extraction_date: Series[UtcDateTime] = pa.Field(coerce=True, metadata=DATE_COLUMN)
    extracted_at: Series[UtcDateTime] = pa.Field(coerce=True)
    model_version: Series[Text]
    bucket: Series[Text]
    bucket_lower: Series[float] = pa.Field(**RATE, coerce=True)
    bucket_upper: Series[float] = pa.Field(**RATE, coerce=True)
    contact_count: Series[int] = pa.Field(ge=0, coerce=True)

    class Config:
        strict = True
        ordered = True
        unique = ["scorecard_id", "extraction_date", "extracted_at", "bucket"]


class FactPredictiveJourney(pa.DataFrameModel):
    """The domain guide's target table: each step joined to its scorecard's latest snapshot."""

    load_timestamp: Series[UtcDateTime] = pa.Field(coerce=True)
    campaign_id: Series[Text]
    scorecard_id: Series[Text] = pa.Field(nullable=True)
    extraction_date: Series[UtcDateTime] = pa.Field(coerce=True, metadata=DATE_COLUMN)
    step_id: Series[Text] = pa.Field(str_length={"min_value": 1})
    step_name: Series[Text] = pa.Field(nullable=True)
    step_sequence: Series[int] = pa.Field(ge=1, coerce=True)
    contact_count: Series[int] = pa.Field(ge=0, coerce=True)
    conversion_rate: Series[float] = pa.Field(**STEP_RATE, nullable=True, coerce=True)
    average_score: Series[float] = pa.Field(**RATE, nullable=True, coerce=True)
    exit_reason: Series[Text] = pa.Field(nullable=True)
    precision: Series[float] = pa.Field(**RATE, nullable=True, coerce=True)
    recall: Series[float] = pa.Field(**RATE, nullable=True, coerce=True)
    f1_score: Series[float] = pa.Field(**RATE, nullable=True, coerce=True)
    actual_conversion_rate: Series[float] = pa.Field(**RATE, nullable=True, coerce=True)
    model_version: Series[Text] = pa.Field(nullable=True)
    pending_backfill: Series[pd.BooleanDtype] = pa.Field(nullable=True, coerce=True)

    class Config:
        strict = True
        ordered = True
        unique = ["campaign_id", "extraction_date", "step_id"]


@dataclass(frozen=True)
class TableSpec:
    """What the warehouse writer needs to know of a table, derived from its model."""

    name: str
    model: type[pa.DataFrameModel]
    columns: tuple[tuple[str, str], ...]  # (column, portable SQL type) in table order
    partition_column: str | None
    not_null: frozenset[str] = frozenset()  # columns the model declares non-nullable

    @property
    def nullable(self) -> frozenset[str]:
        """Columns the model allows NULL in."""
        return frozenset(self.column_names) - self.not_null

    def column_ddl(self, type_name: Callable[[str], str] = str) -> list[str]:
        """``name TYPE [NOT NULL]`` per column, with the warehouse's spelling of each type."""
        return [
            f"{name} {type_name(sql_type)}{' NOT NULL' if name in self.not_null else ''}"
            for name, sql_type in self.columns
        ]

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]


def _sql_type(column: pa.Column) -> str:
    declared = (column.metadata or {}).get("sql_type")
    if declared:
        return declared
    dtype = str(column.dtype).lower()
    if dtype.startswith("datetime64"):
        return "TIMESTAMP"
    if dtype.startswith("int"):
        return "BIGINT"
    if dtype.startswith("float"):
        return "DOUBLE"
    if dtype.startswith("bool"):
        return "BOOLEAN"
    return "VARCHAR"


def table_spec(name: str, model: type[pa.DataFrameModel], partition_column: str | None) -> TableSpec:
    schema = model.to_schema()
    columns = tuple((col_name, _sql_type(col)) for col_name, col in schema.columns.items())
    not_null = frozenset(col_name for col_name, col in schema.columns.items() if not col.nullable)
    return TableSpec(name=name, model=model, columns=columns, partition_column=partition_column, not_null=not_null)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        table_spec("dim_predictive_campaign", DimPredictiveCampaign, None),
        table_spec("fact_journey_step", FactJourneyStep, "extraction_date"),
        table_spec("rejected_journey_step", RejectedJourneyStep, "extraction_date"),
        table_spec("fact_scorecard_performance", FactScorecardPerformance, "extraction_date"),
        table_spec("fact_scorecard_score_distribution", FactScorecardScoreDistribution, "extraction_date"),
        table_spec("fact_predictive_journey", FactPredictiveJourney, "extraction_date"),
    )
}


def typed_frame(spec: TableSpec, rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows as a frame in the table's column order and pandas dtypes, without validating them.

    Validation is the asset checks' job (they must see a bad frame to report it); this only
    gives every frame, empty ones included, the same columns and dtypes.
    """
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=spec.column_names)
    missing = [name for name in spec.column_names if name not in frame.columns]
    if missing:
        raise ValueError(f"{spec.name}: frame lacks columns {missing}")
    in_order = list(frame.columns) == spec.column_names
    if not (in_order and isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1):
        frame = frame.loc[:, spec.column_names].reset_index(drop=True)  # a copy: only when needed
    wanted = {
        name: _PANDAS_DTYPES.get(f"{sql}_NULLABLE", _PANDAS_DTYPES[sql])
        if name in spec.nullable
        else _PANDAS_DTYPES[sql]
        for name, sql in spec.columns
    }
    # Cast only what differs: frames are often typed already, and a cast copies a column.
    casts = {name: dtype for name, dtype in wanted.items() if str(frame[name].dtype) != dtype}
    return frame.astype(casts) if casts else frame


_PANDAS_DTYPES = {
    "VARCHAR": "object",
    "BIGINT": "int64",
    "BIGINT_NULLABLE": "Int64",  # pandas' int64 has no NULL
    "DOUBLE": "float64",
    "BOOLEAN": "bool",
    "BOOLEAN_NULLABLE": "boolean",
    "DATE": "datetime64[ns]",
    "TIMESTAMP": "datetime64[ns]",
}


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one frame against its table's model."""

    table: str
    rows: int
    failure_cases: pd.DataFrame  # pandera's failure cases: schema_context, column, check, failure_case, index

    @property
    def passed(self) -> bool:
        return self.failure_cases.empty

    def summary(self) -> dict[str, int]:
        """Failing rows per check, e.g. {'contact_count: greater_than_or_equal_to(0)': 2}."""
        if self.failure_cases.empty:
            return {}
        cases = self.failure_cases
        is_column = cases["schema_context"] == "Column"
        keys = (cases["column"].astype(str) + ": " + cases["check"].astype(str)).where(
            is_column, cases["check"].astype(str)
        )
        counts = cases.assign(key=keys).groupby("key")["index"].nunique(dropna=False)
        return {str(k): int(v) for k, v in counts.items()}


def validate(spec: TableSpec, frame: pd.DataFrame) -> ValidationReport:
    """Run every check of the table's model lazily, collecting all failures instead of the first."""
    try:
        validated = spec.model.validate(frame, lazy=True)
        # Pandera returns a coerced copy that holds its own accessor, and the accessor the copy: a
        # reference cycle, which Python's collector (paced by object counts, not bytes) frees late.
        # A year's run kept ~60 MB more per chunk that way; breaking the cycle frees the copy now.
        vars(validated).pop("pandera", None)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases.copy()
        return ValidationReport(table=spec.name, rows=len(frame), failure_cases=cases)
    return ValidationReport(table=spec.name, rows=len(frame), failure_cases=pd.DataFrame())


class ScorecardDrift(pa.DataFrameModel):
    """Model drift: one row per scorecard and UTC day that has a final snapshot (see ``pe_assets.drift``)."""

    scorecard_id: Series[Text]
    extraction_date: Series[UtcDateTime] = pa.Field(coerce=True, metadata=DATE_COLUMN)
    model_version: Series[Text]
    snapshot_extracted_at: Series[UtcDateTime] = pa.Field(coerce=True)
    precision: Series[float] = pa.Field(**RATE, coerce=True)
    recall: Series[float] = pa.Field(**RATE, coerce=True)
    predicted_conversion_rate: Series[float] = pa.Field(**RATE, coerce=True)
    actual_conversion_rate: Series[float] = pa.Field(**RATE, coerce=True)
    calibration_gap: Series[float] = pa.Field(**RATE, coerce=True)
    psi: Series[float] = pa.Field(ge=0.0, nullable=True, coerce=True)
    precision_baseline_median: Series[float] = pa.Field(**RATE, nullable=True, coerce=True)
    recall_baseline_median: Series[float] = pa.Field(**RATE, nullable=True, coerce=True)
    precision_delta: Series[float] = pa.Field(ge=-1.0, le=1.0, nullable=True, coerce=True)
    recall_delta: Series[float] = pa.Field(ge=-1.0, le=1.0, nullable=True, coerce=True)
    baseline_days: Series[int] = pa.Field(ge=0, le=28, coerce=True)
    load_timestamp: Series[UtcDateTime] = pa.Field(coerce=True)

    class Config:
        strict = True
        ordered = True
        unique = ["scorecard_id", "extraction_date"]


TABLES["scorecard_drift"] = table_spec("scorecard_drift", ScorecardDrift, "extraction_date")
TABLES["dim_action_map"] = table_spec("dim_action_map", DimActionMap, None)
