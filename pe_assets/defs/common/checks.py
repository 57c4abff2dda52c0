"""Checks every source shares: one result per day, referential integrity, journey freshness.

Each table's own Pandera model runs inside the asset that writes it (``tables.write_partition``),
so a bad frame is never written; the checks here run over what was written, reading the warehouse
through the ``warehouse`` resource (``query`` with ``?`` parameters: the same SQL on DuckDB and
Snowflake). Our assets have no I/O-manager outputs, so no check takes its asset as an input.

Per-partition checks (``partitions_def=``, a preview feature in Dagster 1.13) run in every run that
materializes their asset and record **one result per day**: in a single-day run and also in a
ranged run (a backfill, the 06:00 late-data run), where Dagster itself would record a single
unpartitioned result for the whole range, because ``partition_check_evaluations`` emits one
``AssetCheckEvaluation`` per day of the run's window.

Checks here (asset: name - severity - rule):

* ``fact_journey_step`` and ``fact_predictive_journey``: ``campaign_in_dim`` - ERROR - every
  ``campaign_id`` of the day is in ``dim_predictive_campaign`` (zero orphans tolerated).
* ``fact_journey_step`` and ``fact_predictive_journey``: ``freshness_check`` (Dagster's
  ``build_time_partition_freshness_checks``) - ERROR - yesterday's partition materialized by 02:00
  UTC; run on time by ``pe_freshness_checks_sensor``.
"""

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd

from pe_assets.defs.common.dagster_private import latest_materialization_targets
from pe_assets.rules import PartitionWindow, as_date, partition_window
from pe_assets.warehouse import WarehouseResource

#: Rows shown in a failing check's metadata.
SAMPLE_ROWS = 10
#: Yesterday's journey partition is due at 02:00 UTC (the daily run starts at 00:15).
JOURNEY_DEADLINE_CRON = "0 2 * * *"
#: The journey facts every source writes (the funnel views read the second).
JOURNEY_FACTS = ["fact_journey_step", "fact_predictive_journey"]
#: How often the freshness sensors tick.
FRESHNESS_SENSOR_INTERVAL_SECONDS = 900


# -- one result per partition -------------------------------------------------------------------


@dataclass(frozen=True)
class DayVerdict:
    """One check's outcome for one UTC day."""

    passed: bool
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def tuples_by_day(
    frame: pd.DataFrame, columns: Sequence[str], day_column: str = "extraction_date"
) -> dict[date, list[tuple[Any, ...]]]:
    """Each UTC day's rows of ``frame`` (by ``day_column``) as plain tuples of ``columns``, in frame
    order; a day without rows is absent. A per-day check looks its day up 365 times for a year's
    window: slicing a frame each time costs ~0.5 ms, a list nothing."""
    rows = list(frame.loc[:, list(columns)].itertuples(index=False, name=None))
    positions_by_day = frame.groupby(day_column, sort=False).indices  # day -> row positions, in order
    return {as_date(day): [rows[at] for at in positions] for day, positions in positions_by_day.items()}


def partitioned_asset_check(
    partitions: dg.PartitionsDefinition, **kwargs: Any
) -> Callable[[Callable[..., Any]], dg.AssetChecksDefinition]:
    """``@dg.asset_check(partitions_def=partitions, **kwargs)`` without the PreviewWarning.

    Per-partition checks are preview in Dagster 1.13 (chosen knowingly, see the module docstring);
    the warning would otherwise print on every code-location load.
    """

    def decorate(fn: Callable[..., Any]) -> dg.AssetChecksDefinition:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return dg.asset_check(partitions_def=partitions, **kwargs)(fn)

    return decorate


def partition_check_evaluations(
    context: dg.AssetCheckExecutionContext,
    asset: str,
    check_name: str,
    verdicts: Mapping[date, DayVerdict],
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """One ``AssetCheckEvaluation`` per day of the run's window, then the check's (empty) output.

    Each evaluation names its partition and the partition's latest materialization, so the UI and
    ``get_asset_check_partition_info`` show the result per day, whether the run had one day or many.
    ``verdicts`` must hold a verdict for every day of the window.
    """
    asset_key = dg.AssetKey(asset)
    partitions = {day: day.isoformat() for day in partition_window(context).days}
    targets = latest_materialization_targets(context.instance, asset_key, list(partitions.values()))
    for day, partition in partitions.items():
        verdict = verdicts[day]
        yield dg.AssetCheckEvaluation(
            asset_key=asset_key,
            check_name=check_name,
            passed=verdict.passed,
            severity=verdict.severity,
            description=verdict.description,
            metadata=dict(verdict.metadata),
            partition=partition,
            target_materialization_data=targets.get(partition),
            blocking=False,
        )
    yield dg.Output(None)


def markdown(frame: pd.DataFrame, max_rows: int | None = None) -> dg.MetadataValue:
    """A frame as a markdown table for metadata ("_none_" when empty); with ``max_rows``, its first
    rows and how many more there are. Rendered here, not by ``DataFrame.to_markdown`` (tabulate
    measures every cell: ~1.4 ms a table, paid per day and check in a ranged run)."""
    shown = frame if max_rows is None else frame.head(max_rows)
    rows = list(shown.itertuples(index=False, name=None))
    return markdown_rows(list(frame.columns), rows, more=len(frame) - len(shown))


def markdown_rows(columns: Sequence[str], rows: Sequence[tuple[Any, ...]], *, more: int = 0) -> dg.MetadataValue:
    """``markdown`` of rows already taken out of their frame (tuples in ``columns`` order), ``more``
    rows left out: for a check that renders a sample per day, ~1 ms cheaper than a frame per day."""
    if not rows and not more:
        return dg.MetadataValue.md("_none_")
    lines = [
        "| " + " | ".join(_markdown_cell(name) for name in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *("| " + " | ".join(map(_markdown_cell, row)) + " |" for row in rows),
    ]
    return dg.MetadataValue.md("\n".join(lines) + (f"\n\n_and {more} more rows_" if more else ""))


def _markdown_cell(value: object) -> str:
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


# -- referential integrity ------------------------------------------------------------------------

CAMPAIGN_IN_DIM = "campaign_in_dim"

_ORPHAN_COUNTS_SQL = """
SELECT f.extraction_date, f.campaign_id, COUNT(*) AS orphan_rows
FROM {table} f
WHERE f.extraction_date >= CAST(? AS DATE) AND f.extraction_date < CAST(? AS DATE)
  AND NOT EXISTS (SELECT 1 FROM dim_predictive_campaign d WHERE d.campaign_id = f.campaign_id)
GROUP BY f.extraction_date, f.campaign_id
"""

_ORPHAN_SAMPLE_SQL = """
SELECT extraction_date, campaign_id, step_id, step_sequence, contact_count
FROM (
    SELECT f.extraction_date, f.campaign_id, f.step_id, f.step_sequence, f.contact_count,
           ROW_NUMBER() OVER (PARTITION BY f.extraction_date ORDER BY f.campaign_id, f.step_sequence) AS rn
    FROM {table} f
    WHERE f.extraction_date >= CAST(? AS DATE) AND f.extraction_date < CAST(? AS DATE)
      AND NOT EXISTS (SELECT 1 FROM dim_predictive_campaign d WHERE d.campaign_id = f.campaign_id)
) orphans
WHERE rn <= {limit}
ORDER BY extraction_date, campaign_id, step_sequence
"""

_ROWS_PER_DAY_SQL = """
SELECT extraction_date, COUNT(*) AS row_count
FROM {table}
WHERE extraction_date >= CAST(? AS DATE) AND extraction_date < CAST(? AS DATE)
GROUP BY extraction_date
"""


def campaign_in_dim_verdicts(
    warehouse: WarehouseResource, table: str, window: PartitionWindow
) -> dict[date, DayVerdict]:
    """Per day: the rows of ``table`` whose ``campaign_id`` is not in ``dim_predictive_campaign``.

    Severity ERROR, threshold zero: a fact row for an unknown campaign cannot be attributed.
    """
    params = window.sql_params
    counts = warehouse.query(_ORPHAN_COUNTS_SQL.format(table=table), params)
    sample = warehouse.query(_ORPHAN_SAMPLE_SQL.format(table=table, limit=SAMPLE_ROWS), params)
    totals = warehouse.query(_ROWS_PER_DAY_SQL.format(table=table), params)
    orphans_by_day = tuples_by_day(counts, ["campaign_id", "orphan_rows"])
    sample_columns = list(sample.columns)  # extraction_date first, shown as the day's ISO date
    sample_by_day = tuples_by_day(sample, sample_columns[1:])
    rows_checked = {day: sum(count for (count,) in rows) for day, rows in tuples_by_day(totals, ["row_count"]).items()}
    verdicts: dict[date, DayVerdict] = {}
    for day in window.days:
        orphans = orphans_by_day.get(day, [])
        orphan_rows = sum(int(rows) for _, rows in orphans)
        day_sample = [(day.isoformat(), *row) for row in sample_by_day.get(day, [])]
        verdicts[day] = DayVerdict(
            passed=orphan_rows == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"every campaign_id of {table} on {day} is in dim_predictive_campaign"
                if orphan_rows == 0
                else f"{orphan_rows} rows of {table} on {day} name {len(orphans)} campaign(s) "
                "missing from dim_predictive_campaign"
            ),
            metadata={
                "rows_checked": int(rows_checked.get(day, 0)),
                "orphan_rows": orphan_rows,
                "orphan_campaigns": dg.MetadataValue.json(sorted(str(campaign) for campaign, _ in orphans)),
                "first_orphan_rows": markdown_rows(sample_columns, day_sample),
            },
        )
    return verdicts


def campaign_in_dim_check(partitions: dg.PartitionsDefinition, table: str) -> dg.AssetChecksDefinition:
    """ERROR per day when a row of ``table`` names a campaign missing from the dimension."""

    @partitioned_asset_check(
        partitions,
        asset=table,
        name=CAMPAIGN_IN_DIM,
        additional_deps=["dim_predictive_campaign"],  # run after the dimension is rewritten
        description=(
            f"ERROR if any {table} row of the day has a campaign_id missing from dim_predictive_campaign "
            "(threshold: 0 orphan rows). Metadata: orphan count, orphan campaigns, first orphan rows."
        ),
    )
    def _check(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
        verdicts = campaign_in_dim_verdicts(warehouse, table, partition_window(context))
        yield from partition_check_evaluations(context, table, CAMPAIGN_IN_DIM, verdicts)

    return _check


# -- freshness ------------------------------------------------------------------------------------


def journey_freshness_checks() -> Sequence[dg.AssetChecksDefinition]:
    """ "0 2 * * *": from 02:00 UTC on, the partition of the day that ended at 00:00 must have a
    materialization (before 02:00 the check still expects the day before). ERROR: dashboards miss a day.

    Dagster 1.13 marks this builder superseded by asset-level ``FreshnessPolicy``; that policy judges
    the asset's last materialization, not "this day's partition", so the builder stays and its
    SupersessionWarning is silenced here, knowingly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return dg.build_time_partition_freshness_checks(
            assets=JOURNEY_FACTS,
            deadline_cron=JOURNEY_DEADLINE_CRON,
            timezone="UTC",
            severity=dg.AssetCheckSeverity.ERROR,
        )


def freshness_sensor(name: str, checks: Sequence[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    """Runs freshness checks on time even when no run materializes their assets (they also run in
    every run that does). Dagster's own freshness sensor: it re-runs a passed check once its
    ``dagster/fresh_until_timestamp`` has passed and a failed one after the asset is updated.
    Superseded in Dagster 1.13 together with the check builders above (same reason to keep it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return dg.build_sensor_for_freshness_checks(
            freshness_checks=checks,
            minimum_interval_seconds=FRESHNESS_SENSOR_INTERVAL_SECONDS,
            name=name,
            default_status=dg.DefaultSensorStatus.RUNNING,
        )


def build_shared_checks(
    partitions: dg.PartitionsDefinition,
) -> tuple[list[dg.AssetChecksDefinition], list[dg.SensorDefinition]]:
    """The checks both sources' journey facts get, and the sensor that runs the freshness ones."""
    freshness = list(journey_freshness_checks())
    checks = [*(campaign_in_dim_check(partitions, table) for table in JOURNEY_FACTS), *freshness]
    return checks, [freshness_sensor("pe_freshness_checks_sensor", freshness)]
