"""Asset checks that look across tables or at time: referential integrity, completeness, freshness.

Each table's own Pandera model runs inside the asset that writes it (see ``assets.py``), so a bad
frame is never written; the checks here run over what was written, reading the warehouse through
the ``warehouse`` resource (``query`` with ``?`` parameters: the same SQL on DuckDB and Snowflake).
Our assets have no I/O-manager outputs, so no check here takes its asset as an input.

Per-partition checks (``partitions_def=daily_partitions``, a preview feature in Dagster 1.13) run
in every run that materializes their asset and record **one result per day**: in a single-day run
and also in a ranged run (a backfill, the 06:00 late-data run), where Dagster itself would record a
single unpartitioned result for the whole range, because ``partition_check_evaluations`` emits one
``AssetCheckEvaluation`` per day of the run's window.

Checks (asset: name - severity - rule):

* ``fact_journey_step`` and ``fact_predictive_journey``: ``campaign_in_dim`` - ERROR - every
  ``campaign_id`` of the day is in ``dim_predictive_campaign`` (zero orphans tolerated).
* ``fact_scorecard_performance``: ``scorecard_snapshot_for_day`` - ERROR when a scorecard that the
  day's journey steps reference has no snapshot for the day; WARN when its only snapshots are
  ``pending_backfill`` (normal until the re-extraction 48 h after the day ends).
* ``fact_journey_step`` and ``fact_predictive_journey``: ``freshness_check`` (Dagster's
  ``build_time_partition_freshness_checks``) - ERROR - yesterday's partition materialized by 02:00
  UTC.
* ``fact_scorecard_performance``: ``final_snapshot_freshness`` - WARN - every scorecard of each day
  has a final snapshot once ``FINAL_SNAPSHOT_DEADLINE`` (48 h + 8 h grace) has passed since the day
  ended; see that check for why the built-in cannot say "48 h after the day".

The freshness checks also run on time through ``freshness_checks_sensor`` (export ``sensors``).
"""

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import dagster as dg
import pandas as pd

# Not exported by ``dagster``; dagster is pinned exactly (1.13.27), so the private path is stable here.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from pe_assets.defs.partitions import daily_partitions
from pe_assets.defs.resources import UtcClock
from pe_assets.warehouse import PartitionWindow, WarehouseResource

#: Rows shown in a failing check's metadata.
SAMPLE_ROWS = 10
#: Yesterday's journey partition is due at 02:00 UTC (the daily run starts at 00:15).
JOURNEY_DEADLINE_CRON = "0 2 * * *"
#: Outcomes are backfilled for 48 h after a day ends; a snapshot is final only if taken after that.
OUTCOME_BACKFILL_WINDOW = timedelta(hours=48)
#: The 06:00 UTC late-data run is the first to re-extract a day after its 48 h: give it until 08:00.
FINAL_SNAPSHOT_GRACE = timedelta(hours=8)
#: A day's scorecards are late when not final this long after the day ended (56 h: day D at D+3 08:00).
FINAL_SNAPSHOT_DEADLINE = OUTCOME_BACKFILL_WINDOW + FINAL_SNAPSHOT_GRACE
#: ``final_snapshot_freshness`` looks at the latest due day and the days before it, this many in all.
FINAL_SNAPSHOT_LOOKBACK_DAYS = 7
#: How often the freshness sensor ticks.
FRESHNESS_SENSOR_INTERVAL_SECONDS = 900


# -- one result per partition -------------------------------------------------------------------


@dataclass(frozen=True)
class DayVerdict:
    """One check's outcome for one UTC day."""

    passed: bool
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def partitioned_asset_check(**kwargs: Any) -> Callable[[Callable[..., Any]], dg.AssetChecksDefinition]:
    """``@dg.asset_check(partitions_def=daily_partitions, **kwargs)`` without the PreviewWarning.

    Per-partition checks are preview in Dagster 1.13 (chosen knowingly, see the module docstring);
    the warning would otherwise print on every code-location load.
    """

    def decorate(fn: Callable[..., Any]) -> dg.AssetChecksDefinition:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return dg.asset_check(partitions_def=daily_partitions, **kwargs)(fn)

    return decorate


def check_window(context: dg.AssetCheckExecutionContext) -> PartitionWindow:
    """The run's days: one partition or a range (never ``context.partition_key`` alone)."""
    window = context.partition_time_window
    return PartitionWindow(start=window.start.date(), end=window.end.date())


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
    for day in check_window(context).days:
        verdict = verdicts[day]
        partition = day.isoformat()
        yield dg.AssetCheckEvaluation(
            asset_key=asset_key,
            check_name=check_name,
            passed=verdict.passed,
            severity=verdict.severity,
            description=verdict.description,
            metadata=dict(verdict.metadata),
            partition=partition,
            target_materialization_data=_latest_materialization(context.instance, asset_key, partition),
            blocking=False,
        )
    yield dg.Output(None)


def _latest_materialization(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.event_log_entry.run_id, timestamp=record.timestamp
    )


def _day(value: Any) -> date:
    """A DATE from either warehouse (DuckDB gives Timestamps, Snowflake dates) as a ``date``."""
    return pd.Timestamp(value).date()


def _window_params(window: PartitionWindow) -> list[object]:
    return [window.start.isoformat(), window.end.isoformat()]


def _markdown(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_none_")


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
    params = _window_params(window)
    counts = warehouse.query(_ORPHAN_COUNTS_SQL.format(table=table), params)
    sample = warehouse.query(_ORPHAN_SAMPLE_SQL.format(table=table, limit=SAMPLE_ROWS), params)
    totals = warehouse.query(_ROWS_PER_DAY_SQL.format(table=table), params)
    for frame in (counts, sample, totals):
        frame["day"] = [_day(v) for v in frame["extraction_date"]]
    verdicts: dict[date, DayVerdict] = {}
    for day in window.days:
        orphans = counts[counts["day"] == day]
        orphan_rows = int(orphans["orphan_rows"].sum())
        day_sample = sample[sample["day"] == day].drop(columns=["day"]).assign(extraction_date=day.isoformat())
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
                "rows_checked": int(totals.loc[totals["day"] == day, "row_count"].sum()),
                "orphan_rows": orphan_rows,
                "orphan_campaigns": dg.MetadataValue.json(sorted(orphans["campaign_id"].astype(str))),
                "first_orphan_rows": _markdown(day_sample),
            },
        )
    return verdicts


def _build_campaign_in_dim_check(table: str) -> dg.AssetChecksDefinition:
    @partitioned_asset_check(
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
        verdicts = campaign_in_dim_verdicts(warehouse, table, check_window(context))
        yield from partition_check_evaluations(context, table, CAMPAIGN_IN_DIM, verdicts)

    return _check


journey_step_campaign_in_dim = _build_campaign_in_dim_check("fact_journey_step")
predictive_journey_campaign_in_dim = _build_campaign_in_dim_check("fact_predictive_journey")


# -- scorecard completeness -----------------------------------------------------------------------

SCORECARD_SNAPSHOT_FOR_DAY = "scorecard_snapshot_for_day"

_SCORECARD_COVERAGE_SQL = """
SELECT s.extraction_date, s.scorecard_id,
       COUNT(p.scorecard_id) AS snapshots,
       SUM(CASE WHEN p.pending_backfill = FALSE THEN 1 ELSE 0 END) AS final_snapshots
FROM (
    SELECT DISTINCT extraction_date, scorecard_id
    FROM fact_journey_step
    WHERE scorecard_id IS NOT NULL
      AND extraction_date >= CAST(? AS DATE) AND extraction_date < CAST(? AS DATE)
) s
LEFT JOIN fact_scorecard_performance p
  ON p.scorecard_id = s.scorecard_id AND p.extraction_date = s.extraction_date
GROUP BY s.extraction_date, s.scorecard_id
"""


def scorecard_coverage(warehouse: WarehouseResource, window: PartitionWindow) -> pd.DataFrame:
    """Per day and scorecard referenced by fact_journey_step: its snapshots and final snapshots."""
    coverage = warehouse.query(_SCORECARD_COVERAGE_SQL, _window_params(window))
    coverage["day"] = [_day(v) for v in coverage["extraction_date"]]
    coverage["snapshots"] = coverage["snapshots"].astype(int)
    coverage["final_snapshots"] = coverage["final_snapshots"].astype(int)
    return coverage


def scorecard_snapshot_verdicts(warehouse: WarehouseResource, window: PartitionWindow) -> dict[date, DayVerdict]:
    """Per day: does every scorecard that the day's journey steps reference have a snapshot?

    ERROR when one has no snapshot at all for the day (threshold: 0 missing); otherwise WARN when
    one has only ``pending_backfill`` snapshots (threshold: 0 provisional-only). The WARN is
    expected for the most recent two days and clears when the re-extraction after 48 h lands.
    """
    coverage = scorecard_coverage(warehouse, window)
    verdicts: dict[date, DayVerdict] = {}
    for day in window.days:
        today = coverage[coverage["day"] == day]
        missing = sorted(today.loc[today["snapshots"] == 0, "scorecard_id"].astype(str))
        pending = sorted(
            today.loc[(today["snapshots"] > 0) & (today["final_snapshots"] == 0), "scorecard_id"].astype(str)
        )
        metadata = {
            "referenced_scorecards": len(today),
            "final_scorecards": int((today["final_snapshots"] > 0).sum()),
            "missing_scorecards": dg.MetadataValue.json(missing),
            "pending_only_scorecards": dg.MetadataValue.json(pending),
        }
        if missing:
            verdict = DayVerdict(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"{len(missing)} scorecard(s) used by {day}'s campaigns have no snapshot for the day",
                metadata=metadata,
            )
        elif pending:
            verdict = DayVerdict(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{len(pending)} scorecard(s) of {day} have only pending_backfill snapshots",
                metadata=metadata,
            )
        else:
            verdict = DayVerdict(
                passed=True,
                description=f"all {len(today)} scorecard(s) used on {day} have a final snapshot",
                metadata=metadata,
            )
        verdicts[day] = verdict
    return verdicts


@partitioned_asset_check(
    asset="fact_scorecard_performance",
    name=SCORECARD_SNAPSHOT_FOR_DAY,
    additional_deps=["fact_journey_step"],
    description=(
        "Every scorecard referenced by the day's fact_journey_step rows has a snapshot for the day: "
        "ERROR when one has none (threshold 0), WARN when its only snapshots are pending_backfill."
    ),
)
def scorecard_snapshot_for_day(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """ERROR: a referenced scorecard has no snapshot for the day. WARN: only pending_backfill ones."""
    verdicts = scorecard_snapshot_verdicts(warehouse, check_window(context))
    yield from partition_check_evaluations(context, "fact_scorecard_performance", SCORECARD_SNAPSHOT_FOR_DAY, verdicts)


# -- freshness ------------------------------------------------------------------------------------

# "0 2 * * *": from 02:00 UTC on, the partition of the day that ended at 00:00 must have a
# materialization (before 02:00 the check still expects the day before). ERROR: dashboards miss a day.
journey_freshness_checks: Sequence[dg.AssetChecksDefinition] = dg.build_time_partition_freshness_checks(
    assets=["fact_journey_step", "fact_predictive_journey"],
    deadline_cron=JOURNEY_DEADLINE_CRON,
    timezone="UTC",
    severity=dg.AssetCheckSeverity.ERROR,
)

FINAL_SNAPSHOT_FRESHNESS = "final_snapshot_freshness"
FRESH_UNTIL_METADATA_KEY = "dagster/fresh_until_timestamp"  # read by build_sensor_for_freshness_checks

_SCORECARD_FINALITY_SQL = """
SELECT u.extraction_date, u.scorecard_id,
       SUM(CASE WHEN p.pending_backfill = FALSE THEN 1 ELSE 0 END) AS final_snapshots
FROM (
    SELECT DISTINCT extraction_date, scorecard_id FROM fact_journey_step
    WHERE scorecard_id IS NOT NULL
      AND extraction_date >= CAST(? AS DATE) AND extraction_date < CAST(? AS DATE)
    UNION
    SELECT DISTINCT extraction_date, scorecard_id FROM fact_scorecard_performance
    WHERE extraction_date >= CAST(? AS DATE) AND extraction_date < CAST(? AS DATE)
) u
LEFT JOIN fact_scorecard_performance p
  ON p.scorecard_id = u.scorecard_id AND p.extraction_date = u.extraction_date
GROUP BY u.extraction_date, u.scorecard_id
"""


def latest_due_day(now: datetime, deadline: timedelta = FINAL_SNAPSHOT_DEADLINE) -> date:
    """The latest day D whose scorecards must be final at ``now``: ``end of D + deadline <= now``."""
    return (now.astimezone(UTC) - deadline).date() - timedelta(days=1)


def next_due_at(due_day: date, deadline: timedelta = FINAL_SNAPSHOT_DEADLINE) -> datetime:
    """When the day after ``due_day`` becomes due (the check can turn red again only then)."""
    return datetime.combine(due_day + timedelta(days=2), time.min, UTC) + deadline


def late_scorecards(warehouse: WarehouseResource, now: datetime) -> tuple[PartitionWindow, pd.DataFrame]:
    """The due days looked at, and their scorecards without a final snapshot (``day``, ``scorecard_id``).

    A day's scorecards are those its journey steps reference plus those with any snapshot for it.
    """
    due = latest_due_day(now)
    first = max(due - timedelta(days=FINAL_SNAPSHOT_LOOKBACK_DAYS - 1), _partitions_start())
    window = PartitionWindow(start=min(first, due), end=due + timedelta(days=1))
    rows = warehouse.query(_SCORECARD_FINALITY_SQL, _window_params(window) * 2)
    rows["day"] = [_day(v) for v in rows["extraction_date"]]
    rows["final_snapshots"] = rows["final_snapshots"].fillna(0).astype(int)
    late = rows.loc[rows["final_snapshots"] == 0, ["day", "scorecard_id"]]
    return window, late.sort_values(["day", "scorecard_id"]).reset_index(drop=True)


def _partitions_start() -> date:
    return daily_partitions.start.date()


@dg.asset_check(
    asset="fact_scorecard_performance",
    name=FINAL_SNAPSHOT_FRESHNESS,
    description=(
        "WARN when a scorecard of a day has no final (non-pending_backfill) snapshot 56 h after the day "
        "ended (48 h outcome backfill + 8 h for the 06:00 UTC late-data run): day D is due at D+3 08:00 UTC. "
        "Looks at the latest due day and the 6 before it."
    ),
)
def final_snapshot_freshness(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, clock: UtcClock
) -> dg.AssetCheckResult:
    """Final scorecards by 48 h (+ 8 h grace) after the day ends; severity WARN.

    ``build_time_partition_freshness_checks`` cannot express this: it only asks whether the most
    recent partition completed before the cron tick has *a* materialization, so it can neither
    point at the day three days back nor tell a final snapshot from a provisional one (both are
    materializations). This check reads the warehouse instead. A snapshot is final only if taken
    48 h or more after the day ended, and the first run after that is the 06:00 UTC late-data
    run: exactly 48 h would flag every day for six hours, hence the 8 h grace
    (``FINAL_SNAPSHOT_DEADLINE``). WARN, not ERROR: the provisional snapshot already serves the
    tables (flagged ``pending_backfill``), so the data is degraded, not missing.
    Its metadata carries ``dagster/fresh_until_timestamp`` so ``freshness_checks_sensor`` re-runs it
    when the next day falls due.
    """
    now = clock.now()
    window, late = late_scorecards(warehouse, now)
    due = window.end - timedelta(days=1)
    metadata: dict[str, Any] = {
        "due_days": f"{window.start}..{due}",
        "deadline_after_day_end_hours": FINAL_SNAPSHOT_DEADLINE.total_seconds() / 3600,
        "late_scorecard_days": len(late),
        "late_days": dg.MetadataValue.json(sorted({d.isoformat() for d in late["day"]})),
        "late": _markdown(late.head(SAMPLE_ROWS * 2).assign(day=late["day"].astype(str))),
        "evaluated_at": dg.MetadataValue.timestamp(now),
    }
    if late.empty:
        metadata[FRESH_UNTIL_METADATA_KEY] = dg.MetadataValue.timestamp(next_due_at(due))
    context.log.info(f"final_snapshot_freshness: {len(late)} late scorecard-days in {window.start}..{due}")
    return dg.AssetCheckResult(
        passed=late.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"every scorecard of {window.start}..{due} has a final snapshot"
            if late.empty
            else f"{len(late)} scorecard-day(s) in {window.start}..{due} still lack a final snapshot"
        ),
        metadata=metadata,
    )


freshness_checks: list[dg.AssetChecksDefinition] = [*journey_freshness_checks, final_snapshot_freshness]

# Runs the freshness checks on time even when no run materializes their assets (they also run in
# every run that does). Built on Dagster's freshness sensor: it re-runs a passed check once its
# ``dagster/fresh_until_timestamp`` has passed and a failed one after the asset is updated.
freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=freshness_checks,
    minimum_interval_seconds=FRESHNESS_SENSOR_INTERVAL_SECONDS,
    name="pe_freshness_checks_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
)

asset_checks: list[dg.AssetChecksDefinition] = [
    journey_step_campaign_in_dim,
    predictive_journey_campaign_in_dim,
    scorecard_snapshot_for_day,
    *freshness_checks,
]
#: For the lead to register in ``definitions.py`` (``sensors=[*automation.sensors, *checks.sensors]``).
sensors: list[dg.SensorDefinition] = [freshness_checks_sensor]
