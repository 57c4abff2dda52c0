"""The whole graph's job and its two schedules (every source has them):

``pe_daily_schedule`` (00:15 UTC)
    Yesterday's partition of ``pe_daily_job`` (the whole graph), as soon as the day is complete.
``pe_late_data_schedule`` (06:00 UTC)
    The last ``LATE_DATA_DAYS`` (3) complete days of ``pe_daily_job`` as ONE ranged run: late
    events are picked up, and the oldest day of the window ended 54 h earlier, so outcomes read
    then are final (``pe_assets.rules``).

Ranges travel as the ``dagster/asset_partition_range_start|end`` tags: every asset has
``BackfillPolicy.single_run()`` and reads its partition window.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from pe_assets.defs.common.tables import GraphParts
from pe_assets.rules import LATE_DATA_DAYS, complete_days_ending_yesterday, range_tags

REASON_TAG = "pe/reason"
DAILY_JOB = "pe_daily_job"


def build_daily_automation(
    parts: GraphParts,
) -> tuple[dg.UnresolvedAssetJobDefinition, list[dg.ScheduleDefinition]]:
    """``pe_daily_job`` (every asset, a day or a range of days) and its daily and late-data schedules."""
    # A range of days runs as one run (the assets' BackfillPolicy.single_run), so a year-long
    # backfill is a handful of runs, not 365.
    daily_job = dg.define_asset_job(
        DAILY_JOB,
        selection=dg.AssetSelection.all(),
        partitions_def=parts.partitions,
        description="Extract, land and load every asset of the code location's source, for a day or a range.",
    )
    daily_schedule = dg.build_schedule_from_partitioned_job(
        daily_job,
        name="pe_daily_schedule",
        description="Yesterday's partition of the whole graph, 15 minutes after the UTC day closes.",
        hour_of_day=0,
        minute_of_hour=15,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )

    @dg.schedule(
        name="pe_late_data_schedule",
        job=daily_job,
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"The last {LATE_DATA_DAYS} complete days of the whole graph again, as one ranged run (late data).",
    )
    def pe_late_data_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        """One ranged run over the last ``LATE_DATA_DAYS`` complete days (yesterday included)."""
        now = context.scheduled_execution_time or datetime.now(UTC)
        window = complete_days_ending_yesterday(now, LATE_DATA_DAYS, parts.first_day)
        if window is None:
            return dg.SkipReason("no complete day in the partition range yet")
        first, last = window.start, window.days[-1]
        return dg.RunRequest(
            run_key=f"late-data:{first}...{last}",
            tags={**range_tags(first, last), REASON_TAG: "late-data"},
        )

    return daily_job, [daily_schedule, pe_late_data_schedule]
