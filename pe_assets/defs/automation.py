"""Schedules and sensors: which partitions to (re)materialize, and when.

Four pieces, all on by default (``DefaultScheduleStatus``/``DefaultSensorStatus.RUNNING``):

``pe_daily_schedule`` (00:15 UTC)
    Yesterday's partition of ``pe_daily_job`` (the whole graph), as soon as the day is complete.
``pe_late_data_schedule`` (06:00 UTC)
    The last ``LATE_DATA_DAYS`` (3) complete days of ``pe_daily_job`` as ONE ranged run. Late
    journey events are picked up, and because the oldest day of the window ended 54 h earlier,
    its scorecard snapshot is final (no longer ``pending_backfill``) in the normal course.
``final_outcomes_sensor`` (hourly, warehouse only, no API calls)
    Catches what the rolling re-pull missed (a failed or paused schedule, a fresh backfill): every
    day whose *latest* scorecard snapshot is still ``pending_backfill`` although the day ended more
    than 48 h ago gets one run of ``pe_scorecard_refresh_job`` (``raw_scorecards`` and everything
    downstream of it) with ``run_key="final-outcomes:{day}"``.
``scorecard_retraining_sensor`` (hourly, one listing call)
    Reads the scorecard listing, keeps ``{scorecard_id: modelVersion}`` in its cursor, and when a
    version changes requests the last ``RETRAINING_LOOKBACK_DAYS`` (30) days of
    ``pe_scorecard_refresh_job`` as ONE ranged run, ``run_key="retrained:{scorecard_id}:{version}"``.
    Retraining recomputes past metrics, so the new snapshots sit beside the old ones in the history.

Ranges travel as the ``dagster/asset_partition_range_start|end`` tags: every asset has
``BackfillPolicy.single_run()`` and reads ``context.partition_time_window``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from pe_assets.defs.jobs import pe_daily_job
from pe_assets.defs.partitions import daily_partitions
from pe_assets.defs.resources import PredictiveEngagementResource, UtcClock
from pe_assets.warehouse import WarehouseResource

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
REASON_TAG = "pe/reason"

#: Days re-pulled every morning by ``pe_late_data_schedule`` (one ranged run).
LATE_DATA_DAYS = 3
#: Outcomes (``actualConversionRate``) are final this long after a day ends (domain guide section 3).
OUTCOME_BACKFILL_WINDOW = timedelta(hours=48)
#: Days re-extracted after a scorecard is retrained (one ranged run ending yesterday).
RETRAINING_LOOKBACK_DAYS = 30
#: Both sensors tick at most hourly: the 48-hour rule needs no finer grain, and the retraining
#: sensor spends one listing request (plus a token now and then) of the API budget per tick.
SENSOR_INTERVAL_SECONDS = 3600

FACT_SCORECARD_PERFORMANCE = "fact_scorecard_performance"

# raw_scorecards and its downstream: fact_scorecard_performance, fact_scorecard_score_distribution,
# fact_predictive_journey (and any view added below them later).
scorecard_refresh_selection = dg.AssetSelection.assets("raw_scorecards").downstream()

pe_scorecard_refresh_job = dg.define_asset_job(
    "pe_scorecard_refresh_job",
    selection=scorecard_refresh_selection,
    partitions_def=daily_partitions,
    description=(
        "Re-extract scorecard performance and rebuild the tables below it, for a day or a range of days "
        "(final outcomes after 48 h, retrained models). New snapshots are appended; none are overwritten."
    ),
)


# -- helpers ----------------------------------------------------------------------------------------


def first_partition_day() -> date:
    """The first day of ``daily_partitions`` (PE_PARTITIONS_START)."""
    return daily_partitions.start.date()


def range_tags(first: date, last: date) -> dict[str, str]:
    """Tags that make one run cover the days ``first`` .. ``last`` (inclusive)."""
    return {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}


def complete_days_ending_yesterday(now: datetime, days: int) -> tuple[date, date] | None:
    """The last ``days`` complete UTC days before ``now``, clamped to the first partition.

    ``None`` when no complete day exists yet in the partition space.
    """
    last = _utc(now).date() - timedelta(days=1)
    first = max(last - timedelta(days=days - 1), first_partition_day())
    return (first, last) if first <= last else None


def outcomes_final(day: date, now: datetime) -> bool:
    """True when ``day`` ended more than 48 h before ``now`` (its outcomes are final)."""
    day_end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return _utc(now) - day_end > OUTCOME_BACKFILL_WINDOW


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _load_cursor(cursor: str | None) -> dict[str, object]:
    """A sensor cursor as a dict; an empty or unreadable one counts as no cursor."""
    if not cursor:
        return {}
    try:
        value = json.loads(cursor)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# -- schedules --------------------------------------------------------------------------------------

pe_daily_schedule = dg.build_schedule_from_partitioned_job(
    pe_daily_job,
    name="pe_daily_schedule",
    description="Yesterday's partition of the whole graph, 15 minutes after the UTC day closes.",
    hour_of_day=0,
    minute_of_hour=15,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


@dg.schedule(
    name="pe_late_data_schedule",
    job=pe_daily_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"The last {LATE_DATA_DAYS} complete days of the whole graph again, as one ranged run (late data).",
)
def pe_late_data_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """One ranged run over the last ``LATE_DATA_DAYS`` complete days (yesterday included)."""
    now = context.scheduled_execution_time or datetime.now(UTC)
    window = complete_days_ending_yesterday(now, LATE_DATA_DAYS)
    if window is None:
        return dg.SkipReason("no complete day in the partition range yet")
    first, last = window
    return dg.RunRequest(
        run_key=f"late-data:{first}...{last}",
        tags={**range_tags(first, last), REASON_TAG: "late-data"},
    )


# -- sensor A: final outcomes after 48 hours --------------------------------------------------------

# Days where some scorecard's most recent snapshot is still provisional. Plain SQL (a window
# function, no parameters) so it runs unchanged on DuckDB and Snowflake.
PENDING_DAYS_SQL = f"""
SELECT DISTINCT CAST(extraction_date AS DATE) AS day
FROM (
    SELECT extraction_date, pending_backfill,
           ROW_NUMBER() OVER (PARTITION BY scorecard_id, extraction_date ORDER BY extracted_at DESC) AS rn
    FROM {FACT_SCORECARD_PERFORMANCE}
) latest
WHERE rn = 1 AND pending_backfill
ORDER BY day
"""

TABLE_EXISTS_SQL = (
    f"SELECT count(*) AS n FROM information_schema.tables WHERE lower(table_name) = '{FACT_SCORECARD_PERFORMANCE}'"
)


def pending_days(warehouse: WarehouseResource) -> list[date]:
    """Days whose latest snapshot (for at least one scorecard) is ``pending_backfill``."""
    if int(warehouse.query(TABLE_EXISTS_SQL)["n"].iloc[0]) == 0:
        return []
    frame = warehouse.query(PENDING_DAYS_SQL)
    return sorted({_as_date(value) for value in frame["day"]})


def _as_date(value: object) -> date:
    """A DATE cell as the driver returns it (date, datetime/Timestamp or text)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def final_outcome_requests(
    pending: Iterable[date], now: datetime, already_requested: Iterable[str]
) -> tuple[list[dg.RunRequest], list[str]]:
    """The runs to request and the new cursor's ``requested`` days.

    A pending day is requested once its 48 hours are over and if it was never requested before.
    The cursor keeps only days still pending, so it stays as small as the backlog: once the
    re-extraction has landed a final snapshot the day leaves the query's answer and the cursor.
    """
    pending_set = {d.isoformat() for d in pending}
    requested = {d for d in already_requested if d in pending_set}
    first = first_partition_day()
    runs: list[dg.RunRequest] = []
    for day_key in sorted(pending_set - requested):
        day = date.fromisoformat(day_key)
        if not outcomes_final(day, now) or day < first:
            continue
        runs.append(
            dg.RunRequest(
                run_key=f"final-outcomes:{day_key}",
                partition_key=day_key,
                tags={REASON_TAG: "final-outcomes"},
            )
        )
        requested.add(day_key)
    return runs, sorted(requested)


@dg.sensor(
    name="final_outcomes_sensor",
    job=pe_scorecard_refresh_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Re-extracts scorecards for each day whose latest snapshot is still pending_backfill more than "
        "48 h after the day ended (one run per day, run_key final-outcomes:{day}). Reads the warehouse only."
    ),
)
def final_outcomes_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, clock: UtcClock
) -> dg.SensorResult:
    """Request one re-extraction per day whose outcomes became final but were never re-read."""
    state = _load_cursor(context.cursor)
    recorded = state.get("requested")
    previously = [str(d) for d in recorded] if isinstance(recorded, list) else []
    now = clock.now()
    pending = pending_days(warehouse)
    runs, requested = final_outcome_requests(pending, now, previously)
    if runs:
        context.log.info(f"final outcomes due for {[r.partition_key for r in runs]}")
    cursor = json.dumps({"requested": requested})
    if runs:
        return dg.SensorResult(run_requests=runs, cursor=cursor)
    waiting = len(pending) - len(requested)
    return dg.SensorResult(
        skip_reason=dg.SkipReason(
            f"{len(pending)} day(s) pending_backfill: {len(requested)} already requested, "
            f"{waiting} still inside their 48 hours"
        ),
        cursor=cursor,
    )


# -- sensor B: scorecard retraining -----------------------------------------------------------------


def listed_versions(pages: Iterable[dict[str, object]]) -> dict[str, str]:
    """``{scorecard_id: modelVersion}`` from the raw pages of the scorecard listing."""
    versions: dict[str, str] = {}
    for page in pages:
        for entity in page.get("entities") or []:  # type: ignore[union-attr]
            if isinstance(entity, dict) and entity.get("id") and entity.get("modelVersion") is not None:
                versions[str(entity["id"])] = str(entity["modelVersion"])
    return versions


def retrained(previous: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    """Scorecards known before whose version changed (new scorecards have no history to redo)."""
    return {sid: version for sid, version in sorted(current.items()) if sid in previous and previous[sid] != version}


def build_retraining_sensor(
    lookback_days: int = RETRAINING_LOOKBACK_DAYS,
    name: str = "scorecard_retraining_sensor",
    minimum_interval_seconds: int = SENSOR_INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    """The retraining sensor, re-extracting the last ``lookback_days`` complete days on a change."""
    if not 1 <= lookback_days <= 366:
        raise ValueError("lookback_days must be between 1 and 366")

    @dg.sensor(
        name=name,
        job=pe_scorecard_refresh_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Polls the scorecard listing; when a modelVersion changes, re-extracts the last {lookback_days} "
            "days of scorecards as one ranged run (run_key retrained:{scorecard_id}:{modelVersion})."
        ),
    )
    def _sensor(
        context: dg.SensorEvaluationContext, pe_api: PredictiveEngagementResource, clock: UtcClock
    ) -> dg.SensorResult:
        state = _load_cursor(context.cursor)
        with pe_api.client() as client:
            current = listed_versions(client.list_scorecard_pages())
        cursor = json.dumps({"versions": current}, sort_keys=True)
        previous = state.get("versions")
        if not isinstance(previous, dict):
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"first tick: recorded the versions of {len(current)} scorecard(s)"),
                cursor=cursor,
            )
        changed = retrained({str(k): str(v) for k, v in previous.items()}, current)
        window = complete_days_ending_yesterday(clock.now(), lookback_days)
        if not changed or window is None:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"no retraining among {len(current)} scorecard(s)"), cursor=cursor
            )
        first, last = window
        # One ranged run for every retraining seen in this tick: the run re-extracts every
        # scorecard of those days anyway, so one run per scorecard would spend the API budget twice.
        run_key = "retrained:" + ",".join(f"{sid}:{version}" for sid, version in changed.items())
        context.log.info(f"retrained {changed}: re-extracting {first} .. {last}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=run_key,
                    tags={
                        **range_tags(first, last),
                        REASON_TAG: "retrained",
                        "pe/retrained_scorecards": ",".join(changed),
                    },
                )
            ],
            cursor=cursor,
        )

    return _sensor


scorecard_retraining_sensor = build_retraining_sensor()

schedules: list[dg.ScheduleDefinition] = [pe_daily_schedule, pe_late_data_schedule]
sensors: list[dg.SensorDefinition] = [final_outcomes_sensor, scorecard_retraining_sensor]
# Jobs targeted only by the sensors; definitions.py registers pe_daily_job itself, and Dagster
# also picks up jobs referenced by schedules and sensors.
jobs: list[dg.UnresolvedAssetJobDefinition] = [pe_scorecard_refresh_job]
