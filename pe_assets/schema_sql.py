"""A table's Pandera model as SQL, for rows built and kept in the warehouse (``fact_predictive_journey``).

A warehouse-side table (a join of two warehouse tables) need not come to Python to be checked: its
rows are inserted into the table itself (the model's columns and types, so dtype, ``strict`` and
``ordered`` hold by construction) and checked there before the transaction commits
(``WarehouseResource.replace_partition_with_query``). ``failure_count_sql`` says whether any row
fails; only then does ``failure_cases_sql`` name every failing row, with the check names, columns
and row indexes Pandera reports. The rules are the model's: each column's nullability and
uniqueness, its built-in checks (bounds, ``isin``, ``str_length``) and ``Config.unique``; nulls
pass value checks, as in Pandera. A model with a check this module cannot state in SQL (a custom
``@pa.check``) is refused when its SQL is built, never half-checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pe_assets.schemas import TableSpec, ValidationReport

#: The staging table's row number, reported as Pandera's failure ``index``.
ROW_COLUMN = "pe_row"
#: Pandera's failure-case columns; the query names them so (``column`` and ``check`` are reserved words).
_CASE_COLUMNS = {
    "schema_context": "schema_context",
    "column_name": "column",
    "check_name": "check",
    "failure_case": "failure_case",
    "row_index": "index",
}


def _literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise TypeError(f"no SQL literal for check bound {value!r}")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise TypeError(f"no SQL literal for check bound {value!r}")
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for check bound {value!r}")


def _str_length(column: str, stats: Mapping[str, Any]) -> str:
    exact, low, high = stats.get("exact_value"), stats.get("min_value"), stats.get("max_value")
    if exact is not None:
        return f"length({column}) <> {_literal(exact)}"
    bounds = [f"length({column}) < {_literal(low)}"] if low is not None else []
    bounds += [f"length({column}) > {_literal(high)}"] if high is not None else []
    return " OR ".join(bounds)


#: Built-in check name -> the SQL condition a *failing* (non-null) value meets.
_FAILS: dict[str, Callable[[str, Mapping[str, Any]], str]] = {
    "greater_than_or_equal_to": lambda col, s: f"{col} < {_literal(s['min_value'])}",
    "greater_than": lambda col, s: f"{col} <= {_literal(s['min_value'])}",
    "less_than_or_equal_to": lambda col, s: f"{col} > {_literal(s['max_value'])}",
    "less_than": lambda col, s: f"{col} >= {_literal(s['max_value'])}",
    "isin": lambda col, s: f"{col} NOT IN ({', '.join(_literal(v) for v in s['allowed_values'])})",
    "str_length": _str_length,
}


@dataclass(frozen=True)
class _RowRule:
    """A check judged row by row: rows meeting ``condition`` fail it."""

    column: str
    check: str
    condition: str
    #: The failing value as text (NULL for ``not_nullable``, whose failing value is the null).
    value_sql: str


@dataclass(frozen=True)
class _SqlRules:
    rows: list[_RowRule]
    #: Key sets whose values must not repeat: (check name, schema context, columns).
    unique: list[tuple[str, str, list[str]]]


def _rules(spec: TableSpec) -> _SqlRules:
    """The model's checks in SQL; ``ValueError`` naming any check that has none."""
    schema = spec.model.to_schema()
    untranslatable = [f"{spec.model.__name__}: dataframe check {check.name!r}" for check in schema.checks]
    rows: list[_RowRule] = []
    unique: list[tuple[str, str, list[str]]] = []
    for name, column in schema.columns.items():
        as_text = f"CAST({name} AS VARCHAR)"
        if not column.nullable:
            rows.append(_RowRule(name, "not_nullable", f"{name} IS NULL", "CAST(NULL AS VARCHAR)"))
        if column.unique:
            unique.append(("field_uniqueness", "Column", [name]))
        for check in column.checks:
            condition = _FAILS.get(check.name)
            if condition is None:
                untranslatable.append(f"{spec.model.__name__}.{name}: check {check.name!r}")
                continue
            rows.append(_RowRule(name, check.error or check.name, condition(name, check.statistics), as_text))
    if untranslatable:
        raise ValueError(f"no SQL for {'; '.join(untranslatable)}: validate this table as a frame instead")
    if schema.unique:
        unique.append(("multiple_fields_uniqueness", "DataFrameSchema", list(schema.unique)))
    return _SqlRules(rows, unique)


def failure_count_sql(spec: TableSpec, relation: str) -> str:
    """Expressions over ``relation`` for one SELECT: ``failing_rows`` (rows failing a row check) and
    ``repeated_keys`` (key values held by more than one row); both 0 when every check passes."""
    rules = _rules(spec)
    any_fails = " OR ".join(f"({rule.condition})" for rule in rules.rows) or "1 = 0"
    repeated = " + ".join(
        f"(SELECT COUNT(*) FROM (SELECT 1 AS k FROM {relation} GROUP BY {', '.join(keys)} HAVING COUNT(*) > 1) r)"
        for _, _, keys in rules.unique
    )
    return f"SUM(CASE WHEN {any_fails} THEN 1 ELSE 0 END) AS failing_rows, {repeated or '0'} AS repeated_keys"


def failure_cases_sql(spec: TableSpec, staged: str) -> str:
    """One query over the staged rows (``staged``, with ``ROW_COLUMN``) that returns a row per failure:
    schema_context, column_name, check_name, failure_case (text), row_index; rows as Pandera reports
    them (a repeated key: a row per column of the key and row holding it).

    Raises ``ValueError`` naming any check of the model it cannot state in SQL.
    """
    rules = _rules(spec)
    parts = [
        f"SELECT 'Column' AS schema_context, '{rule.column}' AS column_name, {_literal(rule.check)} AS check_name, "
        f"{rule.value_sql} AS failure_case, {ROW_COLUMN} AS row_index FROM {staged} WHERE {rule.condition}"
        for rule in rules.rows
    ]
    for check, context, keys in rules.unique:
        repeated = f"(SELECT * FROM {staged} QUALIFY COUNT(*) OVER (PARTITION BY {', '.join(keys)}) > 1) repeated"
        parts += [
            f"SELECT '{context}' AS schema_context, '{name}' AS column_name, '{check}' AS check_name, "
            f"CAST({name} AS VARCHAR) AS failure_case, {ROW_COLUMN} AS row_index FROM {repeated}"
            for name in keys
        ]
    if not parts:
        return (
            "SELECT CAST(NULL AS VARCHAR) AS schema_context, CAST(NULL AS VARCHAR) AS column_name, "
            "CAST(NULL AS VARCHAR) AS check_name, CAST(NULL AS VARCHAR) AS failure_case, "
            f"CAST(NULL AS BIGINT) AS row_index FROM {staged} WHERE 1 = 0"
        )
    return "\nUNION ALL\n".join(parts)


def staged_report(spec: TableSpec, rows: int, cases: pd.DataFrame) -> ValidationReport:
    """The outcome of ``failure_cases_sql`` in ``validate``'s terms (columns named as Pandera's)."""
    cases = cases.rename(columns=lambda name: _CASE_COLUMNS.get(str(name).lower(), str(name).lower()))
    if cases.empty:
        return ValidationReport(table=spec.name, rows=rows, failure_cases=pd.DataFrame())
    cases["index"] = cases["index"].astype("int64")
    ordered = cases.sort_values(["schema_context", "column", "check", "index"], kind="stable")
    return ValidationReport(table=spec.name, rows=rows, failure_cases=ordered.reset_index(drop=True))
