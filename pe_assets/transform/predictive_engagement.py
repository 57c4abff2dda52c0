"""The seed contract's landing envelopes -> table frames. Pure functions: no I/O, no Dagster, no clock.

Rules that matter downstream:
- ``step_sequence`` is a step's 1-based position across *all* pages of the day, in the order the
  API served them (not per page).
- A step without ``stepId`` or ``contactCount``, or whose values cannot be typed, is rejected with
  a reason and its raw JSON; it never reaches a fact table and never shifts other steps' positions.
- Null ``stepName``/``exitReason``/``averageScore`` stay NULL; an empty ``exitReason`` is NULL too
  (the contract says none is ever sent, and '' would break ``IS NULL`` filters).
- Unknown extra fields are tolerated and reported, never fatal.
- Rates, scores and metrics keep full 64-bit precision; ``model_version`` stays text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from pe_assets.rules import PartitionWindow, outcomes_final
from pe_assets.schemas import TABLES
from pe_assets.sql import shipped_sql
from pe_assets.transform import frame, to_utc_naive

# Fields the contract defines on a JourneyStep; anything else is schema drift.
KNOWN_STEP_FIELDS = frozenset({"stepId", "stepName", "contactCount", "conversionRate", "averageScore", "exitReason"})
SCORE_BUCKETS = ("0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0")


@dataclass
class JourneyTransformResult:
    """The frames built from a set of journey extractions, plus what was noticed on the way."""

    steps: pd.DataFrame
    rejected: pd.DataFrame
    unknown_fields: dict[str, int] = field(default_factory=dict)  # field name -> steps carrying it


def journey_frames(extractions: Iterable[Mapping[str, Any]], loaded_at: datetime) -> JourneyTransformResult:
    """Flatten journey envelopes (one per campaign and day) into step rows and rejected rows.

    Parsed envelopes go back to JSON text and through ``journey_frames_from_json``, so the rules
    have one production implementation (SQL); ``json.dumps`` adds ~2 s CPU per million steps, still
    about half of what flattening them row by row cost.
    """
    texts = [json.dumps(envelope, ensure_ascii=False, allow_nan=True) for envelope in extractions]
    return journey_frames_from_json(texts, loaded_at)


def journey_frames_reference(extractions: Iterable[Mapping[str, Any]], loaded_at: datetime) -> JourneyTransformResult:
    """The rules row by row in Python: the executable specification ``journey_frames_from_json`` is
    tested against (pe_assets_tests/test_transform_sql.py) and the benchmark's baseline. Not used by
    the pipeline: ~10 s per million steps."""
    load_ts = to_utc_naive(loaded_at)
    step_rows: list[dict[str, Any]] = []
    rejected_rows: list[dict[str, Any]] = []
    unknown: dict[str, int] = {}
    for envelope in extractions:
        campaign_id, day, extracted_at, scorecard_id = _envelope_header(envelope)
        seen_step_ids: set[str] = set()
        for position, step in enumerate(_served_steps(envelope), start=1):
            # position counts rejected steps too: positions are the API's order
            if isinstance(step, dict):
                for name in step.keys() - KNOWN_STEP_FIELDS:
                    unknown[name] = unknown.get(name, 0) + 1
            row, reason = _step_row(step, seen_step_ids)
            if reason is not None:
                rejected_rows.append(
                    {
                        "campaign_id": campaign_id,
                        "extraction_date": day,
                        "step_sequence": position,
                        "reason": reason,
                        "raw_step": _raw_step(step),
                        "extracted_at": extracted_at,
                        "load_timestamp": load_ts,
                    }
                )
                continue
            seen_step_ids.add(row["step_id"])
            step_rows.append(
                {
                    "campaign_id": campaign_id,
                    "extraction_date": day,
                    **row,
                    "step_sequence": position,
                    "scorecard_id": scorecard_id,
                    "extracted_at": extracted_at,
                    "load_timestamp": load_ts,
                }
            )
    return JourneyTransformResult(
        steps=frame("fact_journey_step", step_rows),
        rejected=frame("rejected_journey_step", rejected_rows),
        unknown_fields=unknown,
    )


def _envelope_header(envelope: Mapping[str, Any]) -> tuple[Any, pd.Timestamp, pd.Timestamp | None, Any]:
    """(campaign_id, extraction_date, extracted_at, scorecard_id) of one envelope."""
    return (
        envelope["source_id"],
        pd.Timestamp(date.fromisoformat(envelope["day"])),
        to_utc_naive(envelope["extracted_at"]),
        (envelope.get("campaign") or {}).get("scorecardId"),
    )


def _served_steps(envelope: Mapping[str, Any]) -> list[Any]:
    """The day's steps across all its pages, in served order; a page without "steps" has none."""
    return [step for page in envelope["pages"] for step in page.get("steps") or []]


def _raw_step(step: Any) -> str:
    return json.dumps(step, ensure_ascii=False, sort_keys=True, allow_nan=True)


def _step_row(step: Any, seen_step_ids: set[str]) -> tuple[dict[str, Any], str | None]:
    """The typed columns of one step, or the reason it is rejected."""
    if not isinstance(step, dict):
        return {}, "step is not a JSON object"
    step_id = step.get("stepId")
    if step_id is None or step_id == "":
        return {}, "missing stepId"
    if not isinstance(step_id, str):
        return {}, "stepId is not a string"
    if step_id in seen_step_ids:
        return {}, f"duplicate stepId {step_id!r} in the same day"
    contact_count = step.get("contactCount")
    if contact_count is None:
        return {}, "missing contactCount"
    if isinstance(contact_count, bool) or not isinstance(contact_count, int | float):
        return {}, "contactCount is not a number"
    if isinstance(contact_count, float) and (not math.isfinite(contact_count) or not contact_count.is_integer()):
        return {}, "contactCount is not a whole number"
    if contact_count < 0:
        return {}, "contactCount is negative"
    if contact_count > _INT64_MAX:  # a BIGINT column cannot hold it (it used to crash the frame)
        return {}, "contactCount is too large"
    conversion_rate, reason = _rate(step.get("conversionRate"), "conversionRate", required=True)
    if reason:
        return {}, reason
    average_score, reason = _rate(step.get("averageScore"), "averageScore", required=False)
    if reason:
        return {}, reason
    step_name, reason = _text(step.get("stepName"), "stepName")
    if reason:
        return {}, reason
    exit_reason, reason = _text(step.get("exitReason"), "exitReason")
    if reason:
        return {}, reason
    return {
        "step_id": step_id,
        "step_name": step_name,
        "contact_count": int(contact_count),
        "conversion_rate": conversion_rate,
        "average_score": average_score,
        "exit_reason": exit_reason or None,
    }, None


def _rate(value: Any, name: str, *, required: bool) -> tuple[float | None, str | None]:
    if value is None:
        return None, (f"missing {name}" if required else None)
    # An int is always finite (math.isfinite would overflow on a 400-digit one); range decides.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        return None, f"{name} is not a finite number"
    if not 0.0 <= value <= 1.0:
        return None, f"{name} {value!r} is outside [0, 1]"
    return float(value), None


def _text(value: Any, name: str) -> tuple[str | None, str | None]:
    if value is None or isinstance(value, str):
        return value, None
    return None, f"{name} is not a string"


# ---------------------------------------------------------------------------------------------
# The SQL path. DuckDB parses, unnests, types and checks the landed JSON text; Python finishes
# only rare rows: the raw text and the value-quoting reasons of rejected steps, and envelopes of a
# shape the contract does not allow (decided by the Python rules above, so the result is the same).
# ---------------------------------------------------------------------------------------------

_INT64_MAX = 2**63 - 1
# One parse of each envelope: header fields and each step kept as JSON text (json_transform's
# "JSON" type), pages and steps as lists so their served order survives.
_ENVELOPE_SHAPE = json.dumps(
    {"source_id": "JSON", "day": "JSON", "extracted_at": "JSON", "campaign": "JSON", "pages": [{"steps": ["JSON"]}]}
)
# One small parse per step: its known fields as JSON text. A JSON null comes back as SQL NULL,
# which is what the rules want (``step.get(name)`` is None for null and absent alike).
_STEP_SHAPE = json.dumps({name: "JSON" for name in sorted(KNOWN_STEP_FIELDS)})
_KNOWN_FIELDS_SQL = "[" + ", ".join(f"'{name}'" for name in sorted(KNOWN_STEP_FIELDS)) + "]"
# Reason codes the SQL leaves for Python: their text quotes the value with Python's repr.
_DUPLICATE = "duplicate"
_OUTSIDE = "outside:"


def _number_kind(column: str) -> str:
    """'int', 'float' or 'other' for a JSON value's text, the way Python's json types it: a number
    token without '.', exponent, NaN or Infinity is an int (any size), any other number a float."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL"
        f" WHEN NOT regexp_matches({column}, '^[-0-9NI]') THEN 'other'"
        f" WHEN regexp_matches({column}, '[.eEIN]') THEN 'float' ELSE 'int' END"
    )


def _rate_checks(prefix: str, name: str, *, required: bool) -> str:
    """``_rate`` as CASE branches over the {prefix}_json/_kind/_double/_int columns."""
    missing = f"WHEN {prefix}_json IS NULL THEN 'missing {name}'" if required else ""
    return f"""
            {missing}
            WHEN {prefix}_kind = 'other' THEN '{name} is not a finite number'
            WHEN {prefix}_kind = 'float' AND NOT coalesce(isfinite({prefix}_double), false)
                THEN '{name} is not a finite number'
            WHEN {prefix}_kind = 'float' AND ({prefix}_double < 0 OR {prefix}_double > 1) THEN '{_OUTSIDE}{name}'
            WHEN {prefix}_kind = 'int' AND NOT coalesce({prefix}_int BETWEEN 0 AND 1, false)
                THEN '{_OUTSIDE}{name}'"""


_ENVELOPES_SQL = f"""
CREATE OR REPLACE TEMP TABLE envelope AS
SELECT env_ord, json_transform(txt, '{_ENVELOPE_SHAPE}') AS e FROM envelope_text
"""

# Per envelope: the header when its values are what the contract says (strings; campaign an
# object or absent), else ``header_in_python``. ``steps_in_python`` marks shapes json_transform
# cannot tell from valid ones (pages not a list, a page not an object or whose "steps" is
# absent, null or not a list): Python's iteration rules decide those.
_HEADERS_SQL = """
WITH h AS (
    SELECT
        env_ord, e.source_id AS source_json, e.day AS day_json, e.extracted_at AS extracted_json,
        e.campaign AS campaign_json,
        CASE WHEN starts_with(e.campaign, '{') THEN json_extract(e.campaign, '$.scorecardId') END AS scorecard_json,
        e.pages IS NULL OR coalesce(list_bool_or(list_transform(e.pages, lambda p: p.steps IS NULL)), false)
            AS steps_in_python
    FROM envelope
)
SELECT
    env_ord,
    json_extract_string(source_json, '$') AS campaign_id,
    json_extract_string(day_json, '$') AS day,
    json_extract_string(extracted_json, '$') AS extracted_at,
    CASE WHEN starts_with(scorecard_json, '"') THEN json_extract_string(scorecard_json, '$') END AS scorecard_id,
    NOT (
        coalesce(
            starts_with(source_json, '"') AND starts_with(day_json, '"') AND starts_with(extracted_json, '"'), false
        )
        AND (campaign_json IS NULL OR starts_with(campaign_json, '{'))
        AND (scorecard_json IS NULL OR scorecard_json = 'null' OR starts_with(scorecard_json, '"'))
    ) AS header_in_python,
    steps_in_python
FROM h
ORDER BY env_ord
"""

# Every step numbered across its day's pages, typed, and given a reason (or a code for Python)
# when it breaks a rule. The CASE order is ``_step_row``'s precedence.
_STEPS_SQL = f"""
CREATE OR REPLACE TEMP TABLE step AS
WITH served AS (
    -- two unnests in one SELECT run in lockstep: each step with its 1-based position in the day
    -- (10x cheaper here than a lateral unnest WITH ORDINALITY)
    SELECT env_ord, unnest(steps) AS step, unnest(generate_series(1, len(steps))) AS pos
    FROM (SELECT env_ord, flatten(list_transform(e.pages, lambda p: p.steps)) AS steps FROM envelope)
),
fields AS (
    SELECT
        env_ord, pos,
        coalesce(starts_with(step, '{{'), false) AS is_object,
        json_transform(step, '{_STEP_SHAPE}') AS f,
        CASE WHEN starts_with(step, '{{') THEN json_keys(step) END AS keys,
        len(keys) <> ({" + ".join(f"list_contains(keys, '{name}')::INT" for name in sorted(KNOWN_STEP_FIELDS))})
            AS odd_keys
    FROM served
),
typed AS (
    -- each cast only where its kind needs it (the lateral *_kind aliases)
    SELECT
        env_ord, pos, is_object, keys, odd_keys,
        f.stepId AS id_json,
        CASE WHEN starts_with(f.stepId, '"') THEN json_extract_string(f.stepId, '$') END AS step_id,
        f.stepName AS name_json,
        f.exitReason AS exit_json,
        f.contactCount AS count_json,
        {_number_kind("f.contactCount")} AS count_kind,
        CASE WHEN count_kind = 'int' THEN TRY_CAST(f.contactCount AS HUGEINT) END AS count_int,
        CASE WHEN count_kind <> 'other' THEN TRY_CAST(f.contactCount AS DOUBLE) END AS count_double,
        f.conversionRate AS rate_json,
        {_number_kind("f.conversionRate")} AS rate_kind,
        CASE WHEN rate_kind = 'int' THEN TRY_CAST(f.conversionRate AS HUGEINT) END AS rate_int,
        CASE WHEN rate_kind <> 'other' THEN TRY_CAST(f.conversionRate AS DOUBLE) END AS rate_double,
        f.averageScore AS score_json,
        {_number_kind("f.averageScore")} AS score_kind,
        CASE WHEN score_kind = 'int' THEN TRY_CAST(f.averageScore AS HUGEINT) END AS score_int,
        CASE WHEN score_kind <> 'other' THEN TRY_CAST(f.averageScore AS DOUBLE) END AS score_double
    FROM fields
),
checked AS (
    SELECT
        *,
        CASE
            WHEN count_json IS NULL THEN 'missing contactCount'
            WHEN count_kind = 'other' THEN 'contactCount is not a number'
            WHEN count_kind = 'float'
                AND NOT coalesce(isfinite(count_double) AND count_double = trunc(count_double), false)
                THEN 'contactCount is not a whole number'
            WHEN count_kind = 'float' AND count_double < 0 THEN 'contactCount is negative'
            -- an int too long for HUGEINT is NULL: its sign still decides
            WHEN count_kind = 'int' AND coalesce(count_int < 0, starts_with(count_json, '-'))
                THEN 'contactCount is negative'
            WHEN count_kind = 'float' AND count_double >= 9223372036854775808.0 THEN 'contactCount is too large'
            WHEN count_kind = 'int' AND coalesce(count_int > {_INT64_MAX}, true) THEN 'contactCount is too large'
            {_rate_checks("rate", "conversionRate", required=True)}
            {_rate_checks("score", "averageScore", required=False)}
            WHEN NOT coalesce(starts_with(name_json, '"'), true) THEN 'stepName is not a string'
            WHEN NOT coalesce(starts_with(exit_json, '"'), true) THEN 'exitReason is not a string'
        END AS value_reason
    FROM typed
)
-- The duplicate rule is settled afterwards (``_DUPLICATES_SQL``), on the few ids seen twice.
SELECT
    env_ord,
    pos,
    step_id,
    CASE
        WHEN NOT is_object THEN 'step is not a JSON object'
        WHEN id_json IS NULL OR id_json = '""' THEN 'missing stepId'
        WHEN step_id IS NULL THEN 'stepId is not a string'
    END AS id_reason,
    value_reason,
    coalesce(id_reason, value_reason) AS reason,
    json_extract_string(name_json, '$') AS step_name,
    CASE WHEN count_kind = 'int' THEN TRY_CAST(count_int AS BIGINT) ELSE TRY_CAST(count_double AS BIGINT) END
        AS contact_count,
    rate_double AS conversion_rate,
    score_double AS average_score,
    nullif(json_extract_string(exit_json, '$'), '') AS exit_reason,
    -- Rare: keys beyond the known ones, or a key twice (Python's json keeps the last value,
    -- DuckDB's the first, so Python serves such an envelope). Counting known keys with
    -- list_contains is ~10x cheaper than list_has_all / list_unique on every step.
    CASE WHEN odd_keys THEN list_filter(list_distinct(keys), lambda k: NOT list_contains({_KNOWN_FIELDS_SQL}, k)) END
        AS unknown_keys,
    -- CASE, not AND: AND evaluates both sides on every row
    CASE WHEN odd_keys THEN len(keys) <> list_unique(keys) ELSE false END AS repeated_keys
FROM checked
"""

# Only an earlier ACCEPTED step makes a later one a duplicate, and a step is accepted when it
# passes every other rule and no earlier one of its id was accepted: so among the steps of one id
# (that passed the id checks) the first that passes the value rules is accepted and every later
# one is a duplicate, whatever its values. Ids seen once in a day are skipped before any sort.
_DUPLICATES_SQL = f"""
UPDATE step SET reason = '{_DUPLICATE}'
FROM (
    SELECT env_ord, pos
    FROM (
        SELECT
            env_ord, pos,
            min(pos) FILTER (WHERE value_reason IS NULL) OVER (PARTITION BY env_ord, step_id) AS first_accepted
        FROM step
        SEMI JOIN (
            SELECT env_ord, step_id FROM step WHERE id_reason IS NULL GROUP BY ALL HAVING count(*) > 1
        ) AS repeated USING (env_ord, step_id)
        WHERE id_reason IS NULL
    )
    WHERE pos > first_accepted
) AS duplicate
WHERE step.env_ord = duplicate.env_ord AND step.pos = duplicate.pos
"""

_ACCEPTED_SQL = """
SELECT env_ord, pos, step_id, step_name, contact_count, conversion_rate, average_score, exit_reason
FROM step WHERE reason IS NULL ORDER BY env_ord, pos
"""
_REPEATED_KEYS_SQL = "SELECT DISTINCT env_ord FROM step WHERE repeated_keys"
_REJECTED_SQL = "SELECT env_ord, pos, reason FROM step WHERE reason IS NOT NULL ORDER BY env_ord, pos"
_UNKNOWN_SQL = """
SELECT env_ord, key, count(DISTINCT pos) AS steps
FROM (SELECT env_ord, pos, unnest(list_distinct(unknown_keys)) AS key FROM step WHERE unknown_keys IS NOT NULL)
GROUP BY env_ord, key ORDER BY min(pos), key
"""


@dataclass
class _SqlPass:
    headers: pd.DataFrame  # one row per envelope, in input order
    accepted: dict[str, np.ndarray]  # column -> values, NULL as None/NaN
    rejected: dict[str, np.ndarray]
    unknown: dict[str, np.ndarray]
    steps_in_python: set[int]  # env_ord of envelopes whose steps Python must serve


def _sql_pass(con: duckdb.DuckDBPyConnection, texts: list[str], ords: list[int]) -> _SqlPass:
    con.register("envelope_text", pd.DataFrame({"env_ord": pd.Series(ords, dtype="int64"), "txt": texts}))
    con.execute(_ENVELOPES_SQL)
    con.unregister("envelope_text")
    headers = con.execute(_HEADERS_SQL).df()
    con.execute(_STEPS_SQL)
    con.execute(_DUPLICATES_SQL)
    repeated_keys = {int(i) for i in con.execute(_REPEATED_KEYS_SQL).fetchnumpy()["env_ord"]}
    return _SqlPass(
        headers=headers,
        accepted=_fetch_columns(con, _ACCEPTED_SQL),
        rejected=_fetch_columns(con, _REJECTED_SQL),
        unknown=_fetch_columns(con, _UNKNOWN_SQL),
        steps_in_python={int(i) for i in headers.loc[headers["steps_in_python"], "env_ord"]} | repeated_keys,
    )


def journey_frames_from_json(envelope_texts: Sequence[str | bytes], loaded_at: datetime) -> JourneyTransformResult:
    """``journey_frames`` on the landed files' raw JSON text, flattened and checked by DuckDB.

    The frames and unknown-field counts equal ``journey_frames_reference`` on the parsed
    envelopes, row for row (a step with a repeated key is served by Python, which keeps the last
    value). Differences only on text ``json.dumps`` never writes: DuckDB's reader also takes
    trailing commas, refuses lone UTF-16 surrogates (``"\\ud800"``), and keeps the first of a
    repeated key above the steps (in the envelope header or a page).
    """
    load_ts = to_utc_naive(loaded_at)
    texts = [text.decode("utf-8") if isinstance(text, bytes | bytearray) else text for text in envelope_texts]
    parsed: dict[int, Any] = {}  # env_ord -> json.loads(text), only for the rare rows

    def envelope(env_ord: int) -> Any:
        if env_ord not in parsed:
            parsed[env_ord] = json.loads(texts[env_ord])
        return parsed[env_ord]

    with duckdb.connect() as con:
        first = _sql_pass(con, texts, list(range(len(texts))))
        redo = sorted(first.steps_in_python)
        if redo:
            # Python serves these envelopes' steps (the same ``_served_steps`` the rules define) as
            # one clean page, and the SQL types them like any other.
            served = [
                json.dumps({"pages": [{"steps": _served_steps(envelope(i))}]}, ensure_ascii=False, allow_nan=True)
                for i in redo
            ]
            second = _sql_pass(con, served, redo)
            assert not second.steps_in_python, "a served page is one clean list of steps"
            accepted = _replace_envelopes(first.accepted, second.accepted, redo)
            rejected = _replace_envelopes(first.rejected, second.rejected, redo)
            unknown = _replace_envelopes(first.unknown, second.unknown, redo)
        else:
            accepted, rejected, unknown = first.accepted, first.rejected, first.unknown

    campaign_ids, days, extracted_ats, scorecard_ids = _header_columns(first.headers, envelope)
    # One DataFrame built from whole columns (assign/merge on a frame costs seconds per million).
    env = accepted["env_ord"]
    steps = pd.DataFrame(
        {
            "campaign_id": campaign_ids[env],
            "extraction_date": days[env],
            "step_id": accepted["step_id"],
            "step_name": accepted["step_name"],
            "step_sequence": accepted["pos"],
            "contact_count": accepted["contact_count"],
            "conversion_rate": accepted["conversion_rate"],
            "average_score": accepted["average_score"],
            "exit_reason": accepted["exit_reason"],
            "scorecard_id": scorecard_ids[env],
            "extracted_at": extracted_ats[env],
            "load_timestamp": np.full(len(env), np.datetime64("NaT" if load_ts is None else load_ts, "ns")),
        }
    )
    served_steps: dict[int, list[Any]] = {}
    rejected_rows = []
    for env_ord, position, code in zip(
        rejected["env_ord"].tolist(), rejected["pos"].tolist(), rejected["reason"].tolist(), strict=True
    ):
        if env_ord not in served_steps:
            served_steps[env_ord] = _served_steps(envelope(env_ord))
        step = served_steps[env_ord][position - 1]
        rejected_rows.append(
            {
                "campaign_id": campaign_ids[env_ord],
                "extraction_date": days[env_ord],
                "step_sequence": position,
                "reason": _reason_text(code, step),
                "raw_step": _raw_step(step),
                "extracted_at": extracted_ats[env_ord],
                "load_timestamp": load_ts,
            }
        )
    unknown_fields: dict[str, int] = {}
    for key, count in zip(unknown["key"], unknown["steps"], strict=True):
        unknown_fields[key] = unknown_fields.get(key, 0) + int(count)
    return JourneyTransformResult(
        steps=frame("fact_journey_step", steps),
        rejected=frame("rejected_journey_step", rejected_rows),
        unknown_fields=unknown_fields,
    )


def _fetch_columns(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, np.ndarray]:
    """A query's columns as plain arrays: NULL as None in text columns, NaN in float ones."""
    columns = {}
    for name, values in con.execute(sql).fetchnumpy().items():
        if isinstance(values, np.ma.MaskedArray):
            # filled(None) would mean "the default fill" ('?' for objects): set None explicitly
            fill = None if values.dtype == object else np.nan
            values = np.where(np.ma.getmaskarray(values), fill, values.data).astype(values.dtype)
        columns[name] = np.asarray(values)
    return columns


def _replace_envelopes(
    first: dict[str, np.ndarray], second: dict[str, np.ndarray], env_ords: list[int]
) -> dict[str, np.ndarray]:
    """``first`` with the rows of ``env_ords`` replaced by ``second``'s, in (env_ord, pos) order."""
    kept = ~np.isin(first["env_ord"], env_ords)
    merged = {name: np.concatenate([values[kept], second[name].astype(values.dtype)]) for name, values in first.items()}
    keys = (merged["pos"], merged["env_ord"]) if "pos" in merged else (merged["env_ord"],)
    order = np.lexsort(keys)
    return {name: values[order] for name, values in merged.items()}


def _header_columns(
    headers: pd.DataFrame, envelope: Callable[[int], Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per envelope (indexed by env_ord): campaign_id, extraction_date, extracted_at, scorecard_id."""
    in_sql = ~headers["header_in_python"].to_numpy(dtype=bool)
    campaign_ids = headers["campaign_id"].to_numpy(dtype=object, copy=True)
    scorecard_ids = headers["scorecard_id"].astype(object).where(headers["scorecard_id"].notna(), None).to_numpy()
    day_texts = headers["day"].where(in_sql, None)
    # Few distinct days and (vectorized) instants: parse each once, with the same functions.
    by_day = {text: pd.Timestamp(date.fromisoformat(text)) for text in day_texts.dropna().unique()}
    days = day_texts.map(by_day).to_numpy(dtype="datetime64[ns]", copy=True)
    instant_texts = headers["extracted_at"].where(in_sql, None)
    extracted_ats = _utc_naive_column(instant_texts).to_numpy(dtype="datetime64[ns]", copy=True)
    for env_ord in np.flatnonzero(~in_sql):
        campaign_ids[env_ord], day, extracted_at, scorecard_ids[env_ord] = _envelope_header(envelope(int(env_ord)))
        days[env_ord] = day.to_datetime64()
        extracted_ats[env_ord] = np.datetime64("NaT") if extracted_at is None else extracted_at.to_datetime64()
    return campaign_ids, days, extracted_ats, scorecard_ids


def _utc_naive_column(texts: pd.Series) -> pd.Series:
    """``to_utc_naive`` over a column of ISO-8601 texts (None stays NaT), vectorized: each distinct
    text is parsed once and the column is taken from those by position (no per-value lookups)."""
    codes, distinct = pd.factorize(texts)  # None/NaN -> code -1
    if not len(distinct):
        return pd.Series(np.full(len(texts), np.datetime64("NaT"), dtype="datetime64[ns]"), index=texts.index)
    try:
        parsed = pd.to_datetime(pd.Series(distinct, dtype=object), format="ISO8601", utc=True).dt.tz_localize(None)
    except (ValueError, TypeError):  # not plain ISO-8601: let pd.Timestamp try, as to_utc_naive does
        parsed = pd.Series([to_utc_naive(text) for text in distinct], dtype="datetime64[ns]")
    instants = parsed.to_numpy(dtype="datetime64[ns]")
    return pd.Series(np.where(codes >= 0, instants[codes], np.datetime64("NaT")), index=texts.index)


def _reason_text(code: str, step: Any) -> str:
    """A rejected step's reason, quoting its value as ``_step_row`` does (with Python's repr)."""
    if code == _DUPLICATE:
        return f"duplicate stepId {step['stepId']!r} in the same day"
    if code.startswith(_OUTSIDE):
        name = code.removeprefix(_OUTSIDE)
        return f"{name} {step[name]!r} is outside [0, 1]"
    return code


def scorecard_frames(extractions: Iterable[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every scorecard snapshot -> (performance history rows, score distribution rows).

    Each landed extraction is one snapshot; nothing is collapsed here, so the history keeps every
    model version and every provisional reading. ``pending_backfill`` is true when the snapshot
    was taken less than 48 hours after its day ended.
    """
    # Column by column, not a dict per row: a year is ~50,000 snapshots and 250,000 bucket rows.
    envelopes = list(extractions)
    responses = [envelope["response"] for envelope in envelopes]
    metrics = [response["performanceMetrics"] for response in responses]
    scorecard_ids = [envelope["source_id"] for envelope in envelopes]
    days = [date.fromisoformat(envelope["day"]) for envelope in envelopes]
    # Whole datetime64 columns: a column of Timestamp objects costs pandas a per-value inference.
    day_stamps = np.array(days, dtype="datetime64[D]").astype("datetime64[ns]")
    extracted_column = _utc_naive_column(pd.Series([envelope["extracted_at"] for envelope in envelopes], dtype=object))
    extracted_ats = extracted_column.to_numpy()
    model_versions = [str(response["modelVersion"]) for response in responses]
    performance = {
        "scorecard_id": scorecard_ids,
        "extraction_date": day_stamps,
        "scorecard_name": [response.get("scorecardName") for response in responses],
        "model_version": model_versions,
        "retraining_timestamp": _utc_naive_column(
            pd.Series([response.get("lastRetrainedDate") for response in responses], dtype=object)
        ).to_numpy(),
        **{
            column: [metric[field] for metric in metrics]
            for column, field in (
                ("precision", "precision"),
                ("recall", "recall"),
                ("f1_score", "f1Score"),
                ("auc", "auc"),
                ("actual_conversion_rate", "actualConversionRate"),
                ("predicted_conversion_rate", "predictedConversionRate"),
            )
        },
        "pending_backfill": [
            not outcomes_final(day, at) for day, at in zip(days, extracted_column.tolist(), strict=True)
        ],
        "extracted_at": extracted_ats,
    }
    # One row per bucket of each snapshot: the snapshot's columns repeated, the buckets' flattened.
    distributions = [list((response.get("scoreDistribution") or {}).items()) for response in responses]
    buckets_per_snapshot = [len(distribution) for distribution in distributions]
    labels = [bucket for distribution in distributions for bucket, _ in distribution]
    bounds = {label: _bucket_bounds(label) for label in dict.fromkeys(labels)}  # each label parsed once
    buckets = {
        "scorecard_id": np.repeat(np.array(scorecard_ids, dtype=object), buckets_per_snapshot),
        "extraction_date": np.repeat(day_stamps, buckets_per_snapshot),
        "extracted_at": np.repeat(extracted_ats, buckets_per_snapshot),
        "model_version": np.repeat(np.array(model_versions, dtype=object), buckets_per_snapshot),
        "bucket": labels,
        "bucket_lower": [bounds[label][0] for label in labels],
        "bucket_upper": [bounds[label][1] for label in labels],
        "contact_count": [count for distribution in distributions for _, count in distribution],
    }
    return frame("fact_scorecard_performance", pd.DataFrame(performance)), frame(
        "fact_scorecard_score_distribution",
        pd.DataFrame(buckets, columns=TABLES["fact_scorecard_score_distribution"].column_names),
    )


def _bucket_bounds(bucket: str) -> tuple[float, float]:
    try:
        lower_text, upper_text = bucket.split("-")
        return float(lower_text), float(upper_text)
    except ValueError:
        raise ValueError(f"score bucket {bucket!r} is not of the form 'lo-hi' such as '0.0-0.2'") from None


def campaign_dim_frame(listings: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Every campaign ever listed, in the state of the newest listing that showed it."""
    latest: dict[str, dict[str, Any]] = {}
    for envelope in sorted(listings, key=lambda e: to_utc_naive(e["extracted_at"])):
        listed_at = to_utc_naive(envelope["extracted_at"])
        for page in envelope["pages"]:
            for campaign in page["entities"]:
                latest[campaign["id"]] = {
                    "campaign_id": campaign["id"],
                    "campaign_name": campaign.get("name"),
                    "status": campaign["status"],
                    "scorecard_id": campaign.get("scorecardId"),
                    "created_date": to_utc_naive(campaign.get("createdDate")),
                    "updated_date": to_utc_naive(campaign.get("modifiedDate")),
                    "listed_at": listed_at,
                }
    rows = sorted(latest.values(), key=lambda row: row["campaign_id"])
    return frame("dim_predictive_campaign", rows)


#: The join behind fact_predictive_journey (``pe_assets/sql``): the warehouse runs it on its own
#: tables; ``predictive_journey_frame`` runs the same text on frames.
PREDICTIVE_JOURNEY_SQL = shipped_sql("fact_predictive_journey.sql")


def predictive_journey_params(window: PartitionWindow, loaded_at: datetime) -> list[object]:
    """``PREDICTIVE_JOURNEY_SQL``'s parameters for the steps of ``window``."""
    return [*window.sql_params, to_utc_naive(loaded_at).isoformat(sep=" "), *window.sql_params]


def predictive_journey_frame(steps: pd.DataFrame, performance: pd.DataFrame, loaded_at: datetime) -> pd.DataFrame:
    """Each step row joined to the latest snapshot of its scorecard for the same day (the SQL above,
    on frames: fact_journey_step and fact_scorecard_performance rows)."""
    days = pd.concat([steps["extraction_date"], performance["extraction_date"]]).dropna()
    if days.empty:
        return frame("fact_predictive_journey", [])
    window = PartitionWindow(days.min().date(), days.max().date() + timedelta(days=1))
    with duckdb.connect() as con:
        con.register("fact_journey_step", steps)
        con.register("fact_scorecard_performance", performance)
        joined = con.execute(PREDICTIVE_JOURNEY_SQL, predictive_journey_params(window, loaded_at)).df()
    return frame("fact_predictive_journey", joined)
