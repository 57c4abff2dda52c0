"""The domain's time rules, each written once: every module that needs one imports it from here.

* Partitions are UTC days. A run covers a half-open window of them (``PartitionWindow``), one day
  or a range (a backfill, the late-data run): code reads the window, never a single partition key.
* A range travels as Dagster's two range tags (``range_tags``).
* Scorecard outcomes are backfilled for 48 hours after a day ends (the domain guide's trap): a
  snapshot taken before that is provisional (``pending_backfill``), one taken after is final.
* Late journey events: every morning the last ``LATE_DATA_DAYS`` complete days are pulled again.
* A day's scorecards must be final ``FINAL_SNAPSHOT_DEADLINE`` after it ends (48 h + the grace the
  first run after the 48 h needs).
* Warehouses hand back DATE cells as dates, datetimes, Timestamps or text: ``as_date`` reads all.

Plain Python (no Dagster): the transforms, the checks and the automation share these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

import pandas as pd

#: Outcomes (``actualConversionRate``) are final this long after a day ends.
OUTCOME_BACKFILL_WINDOW = timedelta(hours=48)
#: The 06:00 UTC late-data run is the first to re-extract a day after its 48 h: give it until 08:00.
FINAL_SNAPSHOT_GRACE = timedelta(hours=8)
#: A day's scorecards are late when not final this long after the day ended (day D at D+3 08:00).
FINAL_SNAPSHOT_DEADLINE = OUTCOME_BACKFILL_WINDOW + FINAL_SNAPSHOT_GRACE
#: Complete days re-pulled every morning (one ranged run): late journey events, and the oldest of
#: them ended 54 h before the 06:00 run, so its scorecard snapshot is final in the normal course.
LATE_DATA_DAYS = 3

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class PartitionWindow:
    """A half-open range of UTC days [start, end)."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty partition window {self.start}..{self.end}")

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days)]

    @property
    def sql_params(self) -> list[object]:
        """The bounds as the two ``?`` parameters of ``sql_condition``."""
        return [self.start.isoformat(), self.end.isoformat()]

    @staticmethod
    def sql_condition(column: str) -> str:
        """``column`` within a window whose bounds are bound as ``sql_params`` (portable SQL)."""
        return f"{column} >= CAST(? AS DATE) AND {column} < CAST(? AS DATE)"

    @classmethod
    def inclusive(cls, first: date, last: date) -> PartitionWindow:
        """The days ``first`` .. ``last``, both included."""
        return cls(start=first, end=last + timedelta(days=1))


class _TimeWindow(Protocol):
    start: datetime
    end: datetime


class _HasPartitionTimeWindow(Protocol):
    @property
    def partition_time_window(self) -> _TimeWindow: ...


def partition_window(context: _HasPartitionTimeWindow) -> PartitionWindow:
    """The run's days (an asset's or an asset check's context): one, or a range in ranged runs."""
    window = context.partition_time_window
    return PartitionWindow(start=utc(window.start).date(), end=utc(window.end).date())


def range_tags(first: date, last: date) -> dict[str, str]:
    """Tags that make one run cover the days ``first`` .. ``last`` (inclusive)."""
    return {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already (how the tables store time)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def day_end(day: date) -> datetime:
    """The instant ``day`` ends: 00:00 UTC of the next day."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


def outcomes_final(day: date, at: datetime) -> bool:
    """True when a reading of ``day`` taken at ``at`` sees final outcomes (48 h or more after the day ended)."""
    return utc(at) >= day_end(day) + OUTCOME_BACKFILL_WINDOW


def final_reextraction_due(day: date, now: datetime) -> bool:
    """True once ``day``'s 48 hours are over (strictly): a re-extraction started now reads final outcomes."""
    return utc(now) > day_end(day) + OUTCOME_BACKFILL_WINDOW


def complete_days_ending_yesterday(now: datetime, days: int, first_day: date) -> PartitionWindow | None:
    """The last ``days`` complete UTC days before ``now``, clamped to the first partition ``first_day``.

    ``None`` when no complete day exists yet in the partition space.
    """
    last = utc(now).date() - timedelta(days=1)
    first = max(last - timedelta(days=days - 1), first_day)
    return PartitionWindow.inclusive(first, last) if first <= last else None


def latest_due_day(now: datetime, deadline: timedelta = FINAL_SNAPSHOT_DEADLINE) -> date:
    """The latest day D whose scorecards must be final at ``now``: ``end of D + deadline <= now``."""
    return (utc(now) - deadline).date() - timedelta(days=1)


def next_due_at(due_day: date, deadline: timedelta = FINAL_SNAPSHOT_DEADLINE) -> datetime:
    """When the day after ``due_day`` becomes due."""
    return day_end(due_day + timedelta(days=1)) + deadline


def as_date(value: object) -> date:
    """A DATE cell as a driver returns it (date, datetime, pandas Timestamp, numpy datetime64 or text)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return pd.Timestamp(value).date()  # type: ignore[arg-type]  # text or numpy datetime64
