"""The one partitioning of pe_assets: UTC days, as the engine aggregates them at 00:00 UTC."""

from __future__ import annotations

from datetime import date

import dagster as dg

from pe_assets.config import partitions_start_from_env
from pe_assets.warehouse import PartitionWindow

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=partitions_start_from_env().isoformat(),
    timezone="UTC",
    # Only complete days: today's partition appears after midnight UTC, when its data is final.
    end_offset=0,
)


def partition_window(context: dg.AssetExecutionContext) -> PartitionWindow:
    """The run's days, one or a range (ranged backfills): never ``context.partition_key`` alone."""
    window = context.partition_time_window
    return PartitionWindow(start=_utc_day(window.start), end=_utc_day(window.end))


def _utc_day(moment: object) -> date:
    return moment.date()  # type: ignore[attr-defined]  # TimeWindow bounds are UTC datetimes
