"""The scorecards' sensors: which days to re-extract when outcomes become final or a model is retrained.

``final_outcomes_sensor`` (hourly, warehouse only, no API calls)
    Catches what the rolling re-pull missed (a failed or paused schedule, a fresh backfill): every
    day whose *latest* scorecard snapshot is still ``pending_backfill`` although its outcomes are
    final now (``pe_assets.rules.final_reextraction_due``) gets one run of ``pe_scorecard_refresh_job``
    (``raw_scorecards`` and everything downstream of it) with ``run_key="final-outcomes:{day}"``.
``scorecard_retraining_sensor`` (hourly, one listing call)
    Reads the scorecard listing, keeps ``{scorecard_id: modelVersion}`` in its cursor, and when a
    version changes requests the last ``RETRAINING_LOOKBACK_DAYS`` (30) days of
    ``pe_scorecard_refresh_job`` as ONE ranged run, ``run_key="retrained:{scorecard_id}:{version}"``.
    Retraining recomputes past metrics, so the new snapshots sit beside the old ones in the history.

The whole graph's daily and late-data schedules are every source's (``defs/common/automation.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime

import dagster as dg

from pe_assets.defs.common.automation import REASON_TAG
from pe_assets.defs.common.resources import PredictiveEngagementResource, UtcClock
from pe_assets.defs.common.tables import GraphParts
from pe_assets.rules import as_date, complete_days_ending_yesterday, final_reextraction_due, range_tags
from pe_assets.warehouse import WarehouseResource

#: Days re-extracted after a scorecard is retrained (one ranged run ending yesterday).
RETRAINING_LOOKBACK_DAYS = 30
#: Both sensors tick at most hourly: the 48-hour rule needs no finer grain, and the retraining
#: sensor spends one listing request (plus a token now and then) of the API budget per tick.
SENSOR_INTERVAL_SECONDS = 3600

FACT_SCORECARD_PERFORMANCE = "fact_scorecard_performance"

# -- helpers ----------------------------------------------------------------------------------------


def _load_cursor(cursor: str | None) -> dict[str, object]:
    """A sensor cursor as a dict; an empty or unreadable one counts as no cursor."""
    if not cursor:
        return {}
    try:
        value = json.loads(cursor)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


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


def pending_days(warehouse: WarehouseResource) -> list[date]:
    """Days whose latest snapshot (for at least one scorecard) is ``pending_backfill``."""
    if not warehouse.has_tables(FACT_SCORECARD_PERFORMANCE):
        return []
    frame = warehouse.query(PENDING_DAYS_SQL)
    return sorted({as_date(value) for value in frame["day"]})


def final_outcome_requests(
    pending: Iterable[date], now: datetime, already_requested: Iterable[str], first_day: date
) -> tuple[list[dg.RunRequest], list[str]]:
    """The runs to request and the new cursor's ``requested`` days.

    A pending day is requested once its 48 hours are over and if it was never requested before.
    The cursor keeps only days still pending, so it stays as small as the backlog: once the
    re-extraction has landed a final snapshot the day leaves the query's answer and the cursor.
    """
    pending_set = {d.isoformat() for d in pending}
    requested = {d for d in already_requested if d in pending_set}
    runs: list[dg.RunRequest] = []
    for day_key in sorted(pending_set - requested):
        day = date.fromisoformat(day_key)
        if not final_reextraction_due(day, now) or day < first_day:
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
    parts: GraphParts,
    refresh_job: dg.UnresolvedAssetJobDefinition,
    lookback_days: int = RETRAINING_LOOKBACK_DAYS,
    name: str = "scorecard_retraining_sensor",
    minimum_interval_seconds: int = SENSOR_INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    """The retraining sensor, re-extracting the last ``lookback_days`` complete days on a change."""
    if not 1 <= lookback_days <= 366:
        raise ValueError("lookback_days must be between 1 and 366")

    @dg.sensor(
        name=name,
        job=refresh_job,
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
        window = complete_days_ending_yesterday(clock.now(), lookback_days, parts.first_day)
        if not changed or window is None:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"no retraining among {len(current)} scorecard(s)"), cursor=cursor
            )
        first, last = window.start, window.days[-1]
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


def build_scorecard_automation(
    parts: GraphParts,
) -> tuple[dg.UnresolvedAssetJobDefinition, list[dg.SensorDefinition]]:
    """``pe_scorecard_refresh_job`` and the two sensors that request it."""
    # raw_scorecards and its downstream: fact_scorecard_performance, fact_scorecard_score_distribution,
    # fact_predictive_journey, scorecard_drift (and any view added below them later).
    refresh_job = dg.define_asset_job(
        "pe_scorecard_refresh_job",
        selection=dg.AssetSelection.assets("raw_scorecards").downstream(),
        partitions_def=parts.partitions,
        description=(
            "Re-extract scorecard performance and rebuild the tables below it, for a day or a range of days "
            "(final outcomes after 48 h, retrained models). New snapshots are appended; none are overwritten."
        ),
    )

    @dg.sensor(
        name="final_outcomes_sensor",
        job=refresh_job,
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
        runs, requested = final_outcome_requests(pending, now, previously, parts.first_day)
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

    return refresh_job, [final_outcomes_sensor, build_retraining_sensor(parts, refresh_job)]
