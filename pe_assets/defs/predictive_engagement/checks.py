"""Checks of the scorecard history (the seed contract's scorecards), per day and on time.

* ``fact_scorecard_performance``: ``scorecard_snapshot_for_day`` - ERROR when a scorecard that the
  day's journey steps reference has no snapshot for the day; WARN when its only snapshots are
  ``pending_backfill`` (normal until the re-extraction 48 h after the day ends).
* ``fact_scorecard_performance``: ``final_snapshot_freshness`` - WARN - every scorecard of each day
  has a final snapshot once ``FINAL_SNAPSHOT_DEADLINE`` (48 h + 8 h grace, ``pe_assets.rules``) has
  passed since the day ended; see that check for why the built-in cannot say "48 h after the day".
"""

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd

from pe_assets.defs.common.checks import (
    SAMPLE_ROWS,
    DayVerdict,
    freshness_sensor,
    markdown,
    partition_check_evaluations,
    partitioned_asset_check,
    tuples_by_day,
)
from pe_assets.defs.common.resources import UtcClock
from pe_assets.defs.common.tables import GraphParts
from pe_assets.rules import (
    FINAL_SNAPSHOT_DEADLINE,
    PartitionWindow,
    as_date,
    latest_due_day,
    next_due_at,
    partition_window,
)
from pe_assets.warehouse import WarehouseResource

#: ``final_snapshot_freshness`` looks at the latest due day and the days before it, this many in all.
FINAL_SNAPSHOT_LOOKBACK_DAYS = 7


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
    coverage = warehouse.query(_SCORECARD_COVERAGE_SQL, window.sql_params)
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
    coverage_by_day = tuples_by_day(coverage, ["scorecard_id", "snapshots", "final_snapshots"])
    verdicts: dict[date, DayVerdict] = {}
    for day in window.days:
        today = coverage_by_day.get(day, [])
        missing = sorted(str(scorecard) for scorecard, snapshots, _ in today if snapshots == 0)
        pending = sorted(str(scorecard) for scorecard, snapshots, final in today if snapshots > 0 and final == 0)
        metadata = {
            "referenced_scorecards": len(today),
            "final_scorecards": sum(1 for *_, final in today if final > 0),
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


# -- final snapshots ------------------------------------------------------------------------------

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


def late_scorecards(
    warehouse: WarehouseResource, now: datetime, first_day: date
) -> tuple[PartitionWindow, pd.DataFrame]:
    """The due days looked at, and their scorecards without a final snapshot (``day``, ``scorecard_id``).

    A day's scorecards are those its journey steps reference plus those with any snapshot for it.
    """
    due = latest_due_day(now)
    first = max(due - timedelta(days=FINAL_SNAPSHOT_LOOKBACK_DAYS - 1), first_day)
    window = PartitionWindow(start=min(first, due), end=due + timedelta(days=1))
    if not warehouse.has_tables("fact_journey_step", "fact_scorecard_performance"):
        return window, pd.DataFrame({"day": [], "scorecard_id": []})  # nothing loaded yet: nothing late
    rows = warehouse.query(_SCORECARD_FINALITY_SQL, window.sql_params * 2)
    rows["day"] = [as_date(v) for v in rows["extraction_date"]]
    rows["final_snapshots"] = rows["final_snapshots"].fillna(0).astype(int)
    late = rows.loc[rows["final_snapshots"] == 0, ["day", "scorecard_id"]]
    return window, late.sort_values(["day", "scorecard_id"]).reset_index(drop=True)


def build_scorecard_checks(parts: GraphParts) -> tuple[list[dg.AssetChecksDefinition], list[dg.SensorDefinition]]:
    """The scorecard checks, and the sensor that runs ``final_snapshot_freshness`` on time."""

    @partitioned_asset_check(
        parts.partitions,
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
        verdicts = scorecard_snapshot_verdicts(warehouse, partition_window(context))
        yield from partition_check_evaluations(
            context, "fact_scorecard_performance", SCORECARD_SNAPSHOT_FOR_DAY, verdicts
        )

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
        Its metadata carries ``dagster/fresh_until_timestamp`` so ``pe_final_snapshot_freshness_sensor`` re-runs it
        when the next day falls due.
        """
        now = clock.now()
        window, late = late_scorecards(warehouse, now, parts.first_day)
        due = window.end - timedelta(days=1)
        metadata: dict[str, Any] = {
            "due_days": f"{window.start}..{due}",
            "deadline_after_day_end_hours": FINAL_SNAPSHOT_DEADLINE.total_seconds() / 3600,
            "late_scorecard_days": len(late),
            "late_days": dg.MetadataValue.json(sorted({d.isoformat() for d in late["day"]})),
            "late": markdown(late.head(SAMPLE_ROWS * 2).assign(day=late["day"].astype(str))),
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

    return [scorecard_snapshot_for_day, final_snapshot_freshness], [
        freshness_sensor("pe_final_snapshot_freshness_sensor", [final_snapshot_freshness])
    ]
