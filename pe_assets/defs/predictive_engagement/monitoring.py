"""Monitoring assets: model drift per scorecard and day.

``scorecard_drift`` turns the scorecard history into one row per scorecard and UTC day (the math
and its formulas are in ``pe_assets.drift``), from FINAL snapshots only: a day whose scorecard has
only ``pending_backfill`` snapshots gets no row until a later re-extraction makes it final (the
06:00 late-data run and the final-outcomes sensor both re-run everything downstream of the
scorecards, this asset included). Each day is compared with the 28 days before it, so the asset
reads 28 days more than its partition window.

Its checks are per partition (one result per day, also in ranged runs) and all WARN; they judge
the rows written for the day (a day without rows passes, saying so):

* ``score_distribution_stable``: PSI of the day's score distribution vs the 28-day baseline
  <= ``PSI_THRESHOLD`` (0.2, the usual "significant shift" line). Rows with fewer than
  ``MIN_BASELINE_DAYS`` (7) baseline days are not judged.
* ``calibration_within_tolerance``: ``|predicted - actual conversion rate|`` <=
  ``CALIBRATION_GAP_THRESHOLD`` (0.05, five percentage points; conversion rates run 10-40 %).
* ``precision_recall_stable``: precision and recall each drop by at most ``METRIC_DROP_THRESHOLD``
  (0.1) below their 28-day median. Rows with fewer than 7 baseline days are not judged.
"""

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import dagster as dg
import pandas as pd

from pe_assets.defs.common.checks import (
    SAMPLE_ROWS,
    DayVerdict,
    markdown_rows,
    partition_check_evaluations,
    partitioned_asset_check,
    tuples_by_day,
)
from pe_assets.defs.common.resources import UtcClock
from pe_assets.defs.common.tables import (
    OWNERS,
    GraphParts,
    TableChunk,
    schema_check,
    table_chunks,
    table_definition_metadata,
    write_tables,
)
from pe_assets.drift import BASELINE_DAYS, MIN_BASELINE_DAYS, drift_frame
from pe_assets.rules import PartitionWindow, partition_window
from pe_assets.schemas import TABLES, typed_frame
from pe_assets.warehouse import WarehouseResource

SCORECARD_DRIFT = "scorecard_drift"
#: PSI above this is a significant shift of the score distribution (WARN).
PSI_THRESHOLD = 0.2
#: A gap between predicted and actual conversion rate above this is miscalibration (WARN).
CALIBRATION_GAP_THRESHOLD = 0.05
#: Precision or recall this far below its trailing 28-day median is a drop (WARN).
METRIC_DROP_THRESHOLD = 0.1

_SAMPLE_COLUMNS = [
    "scorecard_id",
    "model_version",
    "psi",
    "calibration_gap",
    "precision_delta",
    "recall_delta",
    "baseline_days",
]


def _max_or_none(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.max()) if len(values) else None


# -- WARN checks, one result per day ----------------------------------------------------------------


def drift_verdicts(
    warehouse: WarehouseResource,
    window: PartitionWindow,
    breaches: Callable[[pd.DataFrame], pd.Series],
    rule: str,
    *,
    needs_baseline: bool,
) -> dict[date, DayVerdict]:
    """Per day: the drift rows for which ``breaches`` is true fail the day with severity WARN.

    With ``needs_baseline``, rows with fewer than ``MIN_BASELINE_DAYS`` baseline days are skipped.
    """
    rows = warehouse.read(TABLES[SCORECARD_DRIFT], window)
    # Judged and breaching once over the window, not per day (a year: ~50,000 rows, 365 days).
    judged = rows["baseline_days"] >= MIN_BASELINE_DAYS if needs_baseline else pd.Series(True, index=rows.index)
    failing = judged & breaches(rows).fillna(False).astype(bool)
    days = rows["extraction_date"].dt.date
    rows_per_day = days.value_counts().to_dict()
    judged_per_day = days[judged].value_counts().to_dict()
    failing_by_day = tuples_by_day(rows[failing], _SAMPLE_COLUMNS)
    scorecard_at = _SAMPLE_COLUMNS.index("scorecard_id")
    verdicts: dict[date, DayVerdict] = {}
    for day in window.days:
        today, judged_today = rows_per_day.get(day, 0), judged_per_day.get(day, 0)
        failing_today = failing_by_day.get(day, [])
        metadata: dict[str, Any] = {
            "rule": rule,
            "scorecards": today,
            "scorecards_judged": judged_today,
            "scorecards_breaching": dg.MetadataValue.json(sorted(str(row[scorecard_at]) for row in failing_today)),
            "breaches": markdown_rows(
                _SAMPLE_COLUMNS, failing_today[:SAMPLE_ROWS], more=max(len(failing_today) - SAMPLE_ROWS, 0)
            ),
        }
        if not today:
            description = f"no drift rows for {day} (no final scorecard snapshot yet)"
        elif not failing_today:
            description = f"{judged_today} of {today} scorecard(s) judged on {day}: none breaches {rule}"
        else:
            description = f"{len(failing_today)} scorecard(s) on {day} breach {rule}"
        verdicts[day] = DayVerdict(
            passed=not failing_today,
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata=metadata,
        )
    return verdicts


def _build_drift_check(
    parts: GraphParts,
    name: str,
    rule: str,
    breaches: Callable[[pd.DataFrame], pd.Series],
    *,
    needs_baseline: bool,
) -> dg.AssetChecksDefinition:
    baseline_note = f" Rows with fewer than {MIN_BASELINE_DAYS} baseline days are not judged." if needs_baseline else ""

    @partitioned_asset_check(
        parts.partitions,
        asset=SCORECARD_DRIFT,
        name=name,
        description=f"WARN when a scorecard's drift row of the day breaches: {rule}.{baseline_note}",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
        verdicts = drift_verdicts(warehouse, partition_window(context), breaches, rule, needs_baseline=needs_baseline)
        yield from partition_check_evaluations(context, SCORECARD_DRIFT, name, verdicts)

    return _check


def build_monitoring(parts: GraphParts) -> tuple[dg.AssetsDefinition, list[dg.AssetChecksDefinition]]:
    """``scorecard_drift`` and its three per-day WARN checks."""

    @dg.asset(
        partitions_def=parts.partitions,
        backfill_policy=parts.backfill_policy,
        deps=["fact_scorecard_performance", "fact_scorecard_score_distribution"],
        check_specs=[schema_check(SCORECARD_DRIFT)],
        group_name="monitoring",
        kinds=set(parts.table_kinds),
        owners=OWNERS,
        tags=parts.source_tags,
        metadata=table_definition_metadata("scorecard_drift"),
    )
    def scorecard_drift(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, clock: UtcClock
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        """Per scorecard and day, from its final snapshot: calibration gap, PSI and precision/recall deltas.

        The baseline is the 28 days before each day (``pe_assets.drift``); scorecard-days without a
        final snapshot get no row. Validated against ``ScorecardDrift`` before it replaces the window.
        """
        loaded_at = clock.now()
        totals = {"scorecard_days": 0, "drift_rows": 0}
        maxima: dict[str, list[float]] = {"psi": [], "calibration_gap": []}

        def chunks() -> Iterator[TableChunk]:
            window = partition_window(context)
            for chunk in table_chunks(warehouse, "fact_scorecard_performance", "scorecard_id", window):
                history = PartitionWindow(start=chunk.start - timedelta(days=BASELINE_DAYS), end=chunk.end)
                performance = warehouse.read(TABLES["fact_scorecard_performance"], history)
                distribution = warehouse.read(TABLES["fact_scorecard_score_distribution"], history)
                frame = typed_frame(
                    TABLES[SCORECARD_DRIFT], drift_frame(performance, distribution, chunk.days, loaded_at=loaded_at)
                )
                days = performance["extraction_date"].dt.date
                in_chunk = performance[(days >= chunk.start) & (days < chunk.end)]
                totals["scorecard_days"] += len(in_chunk.drop_duplicates(["scorecard_id", "extraction_date"]))
                totals["drift_rows"] += len(frame)
                for column, values in maxima.items():
                    if (peak := _max_or_none(frame[column])) is not None:
                        values.append(peak)
                yield {SCORECARD_DRIFT: (frame, chunk)}

        yield from write_tables(
            context,
            warehouse,
            chunks(),
            lambda: {
                SCORECARD_DRIFT: {
                    "scorecard_days": totals["scorecard_days"],
                    "scorecard_days_without_final_snapshot": totals["scorecard_days"] - totals["drift_rows"],
                    "max_psi": max(maxima["psi"], default=None),
                    "max_calibration_gap": max(maxima["calibration_gap"], default=None),
                }
            },
        )

    score_distribution_stable = _build_drift_check(
        parts,
        "score_distribution_stable",
        f"psi > {PSI_THRESHOLD}",
        lambda rows: rows["psi"] > PSI_THRESHOLD,
        needs_baseline=True,
    )
    calibration_within_tolerance = _build_drift_check(
        parts,
        "calibration_within_tolerance",
        f"calibration_gap > {CALIBRATION_GAP_THRESHOLD}",
        lambda rows: rows["calibration_gap"] > CALIBRATION_GAP_THRESHOLD,
        needs_baseline=False,
    )
    precision_recall_stable = _build_drift_check(
        parts,
        "precision_recall_stable",
        f"precision_delta < -{METRIC_DROP_THRESHOLD} or recall_delta < -{METRIC_DROP_THRESHOLD}",
        lambda rows: (
            (rows["precision_delta"] < -METRIC_DROP_THRESHOLD) | (rows["recall_delta"] < -METRIC_DROP_THRESHOLD)
        ),
        needs_baseline=True,
    )

    return scorecard_drift, [score_distribution_stable, calibration_within_tolerance, precision_recall_stable]
