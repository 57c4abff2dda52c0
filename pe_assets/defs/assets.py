"""The asset graph: raw extractions land unchanged, then facts and dims are rebuilt from the landing zone.

    raw_campaign_journeys --> raw_scorecards
          |                        |
          +--> fact_journey_step, rejected_journey_step     fact_scorecard_performance,
          |            |                                     fact_scorecard_score_distribution
          |            +------------> fact_predictive_journey <---+
          +--> dim_predictive_campaign

Every partitioned asset reads its run's whole partition window (ranged backfills run as one run),
validates each frame against its table's Pandera model *before* writing (a failing frame is
reported as a failed, blocking check and never written), and replaces its partitions atomically.
"""

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd

from pe_assets.client import ClientStats, NotFoundError, PredictiveEngagementError
from pe_assets.config import warehouse_from_env
from pe_assets.defs.partitions import daily_partitions, partition_window
from pe_assets.defs.resources import LandingZoneResource, PredictiveEngagementResource, UtcClock
from pe_assets.landing import LandingZone
from pe_assets.schemas import TABLES, TableSpec, validate
from pe_assets.transform import campaign_dim_frame, journey_frames, predictive_journey_frame, scorecard_frames
from pe_assets.warehouse import PartitionWindow, WarehouseResource

EXTRACTED_STATUSES = ("active", "paused")  # archived campaigns answer 404 on analytics
CAMPAIGN_LISTING = "campaign_listing"
RAW_JOURNEYS = "raw_campaign_journeys"
RAW_SCORECARDS = "raw_scorecards"
SCHEMA_CHECK = "schema"
# Tables show where they live (duckdb or snowflake) in the UI's kind tags.
TABLE_KINDS = {"pandas", warehouse_from_env()}
OWNERS = ["team:data-engineering"]

single_run = dg.BackfillPolicy.single_run()
# Transient API trouble that outlived the client's own retries (or a Retry-After above the cap)
# gets whole-step retries from Dagster, spaced out with backoff and jitter.
api_retry_policy = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def _schema_check(table: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        SCHEMA_CHECK,
        asset=table,
        blocking=True,
        description=f"Every row of {table} satisfies its Pandera model (types, nulls, ranges, uniqueness).",
    )


def _table_asset_spec(table: str, upstream: dg.AssetsDefinition | str, description: str) -> dg.AssetSpec:
    return dg.AssetSpec(table, deps=[upstream], description=description, kinds=TABLE_KINDS, owners=OWNERS)


def _column_schema(spec: TableSpec) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, sql_type) for name, sql_type in spec.columns])


def _client_metadata(stats: ClientStats) -> dict[str, Any]:
    return {
        "api_requests": stats.requests,
        "api_pages": stats.pages,
        "api_429s": stats.rate_limited_429s,
        "api_retries": stats.retries,
    }


@contextmanager
def _permanent_api_errors_fail_fast() -> Iterator[None]:
    """Let Dagster retry only what can succeed later (5xx, timeouts, a long Retry-After).

    A wrong secret, a refused scope, a bad payload or a pagination loop fails the step for good,
    instead of being retried for minutes by the assets' RetryPolicy.
    """
    try:
        yield
    except PredictiveEngagementError as exc:
        if exc.retryable:
            raise
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def _landed_by_run(zone: LandingZone, dataset: str, days: Iterable[date], run_id: str) -> set[tuple[str, date]]:
    """(source, day) pairs an earlier attempt of this run already landed: a step retry skips them,
    so a retried run adds no second snapshot and spends no request twice."""
    return {
        (landed.source_id, day)
        for day in days
        for landed in zone.files(dataset, day)
        if landed.envelope.get("run_id") == run_id
    }


# -- raw extraction ---------------------------------------------------------------------------------


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    retry_policy=api_retry_policy,
    pool="pe_api",
    group_name="raw",
    kinds={"api", "json"},
    owners=OWNERS,
)
def raw_campaign_journeys(
    context: dg.AssetExecutionContext,
    pe_api: PredictiveEngagementResource,
    landing: LandingZoneResource,
    clock: UtcClock,
) -> dg.MaterializeResult:
    """Each active or paused campaign's journey funnel for each day, as served, in the landing zone.

    The campaign listing decides what is extracted (status comes from it, not from one request per
    campaign) and is landed too. All pages of a campaign-day land as one file, or none: a campaign
    archived in the middle of its pagination answers 404 and is recorded, not half-landed.
    """
    window = partition_window(context)
    zone = landing.zone()
    done = _landed_by_run(zone, RAW_JOURNEYS, window.days, context.run_id)
    with pe_api.client() as client, _permanent_api_errors_fail_fast():
        listing_pages = client.list_campaign_pages()
        zone.write(CAMPAIGN_LISTING, "all", clock.now(), {"run_id": context.run_id, "pages": listing_pages})
        campaigns = [c for page in listing_pages for c in page["entities"]]
        extracted = [c for c in campaigns if c["status"] in EXTRACTED_STATUSES]

        def extract(task: tuple[dict[str, Any], date]) -> tuple[str, date, str | None]:
            campaign, day = task
            try:
                pages = client.get_campaign_journey_pages(campaign["id"], day)
            except NotFoundError:
                return campaign["id"], day, None  # archived since the listing
            payload = {"run_id": context.run_id, "campaign": campaign, "pages": pages}
            return campaign["id"], day, zone.write(RAW_JOURNEYS, campaign["id"], clock.now(), payload, day)

        tasks = [(c, day) for day in window.days for c in extracted if (c["id"], day) not in done]
        results = client.map(extract, tasks)
        stats = client.stats

    archived_during_run = sorted({f"{cid} ({day})" for cid, day, path in results if path is None})
    if archived_during_run:
        context.log.warning(f"{len(archived_during_run)} campaign-days were archived during extraction")
    return dg.MaterializeResult(
        metadata={
            "days": len(window.days),
            "campaigns_listed": len(campaigns),
            "campaigns_extracted": len(extracted),
            "campaigns_skipped_archived": len(campaigns) - len(extracted),
            "campaign_days_landed": sum(1 for *_, path in results if path),
            "campaign_days_landed_by_earlier_attempt": len(done),
            "campaign_days_archived_during_run": len(archived_during_run),
            "archived_during_run": dg.MetadataValue.json(archived_during_run),
            **_client_metadata(stats),
        }
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    retry_policy=api_retry_policy,
    pool="pe_api",
    deps=[raw_campaign_journeys],
    group_name="raw",
    kinds={"api", "json"},
    owners=OWNERS,
)
def raw_scorecards(
    context: dg.AssetExecutionContext,
    pe_api: PredictiveEngagementResource,
    landing: LandingZoneResource,
    clock: UtcClock,
) -> dg.MaterializeResult:
    """Each day's model performance for every scorecard the day's extracted campaigns use.

    A scorecard shared by many campaigns is fetched once per day. Every extraction is kept: outcomes
    are backfilled up to 48 h after a day ends and retraining rewrites past metrics, so the history
    of snapshots is the record.
    """
    window = partition_window(context)
    zone = landing.zone()
    done = _landed_by_run(zone, RAW_SCORECARDS, window.days, context.run_id)
    tasks = [
        (scorecard_id, day)
        for day in window.days
        for scorecard_id in sorted(
            {
                f.envelope["campaign"]["scorecardId"]
                for f in zone.latest_per_source(RAW_JOURNEYS, day).values()
                if f.envelope.get("campaign", {}).get("scorecardId")
            }
        )
        if (scorecard_id, day) not in done
    ]
    with pe_api.client() as client, _permanent_api_errors_fail_fast():

        def extract(task: tuple[str, date]) -> tuple[str, date, str | None]:
            scorecard_id, day = task
            try:
                response = client.get_scorecard_performance(scorecard_id, day)
            except NotFoundError:
                return scorecard_id, day, None
            payload = {"run_id": context.run_id, "response": response}
            return scorecard_id, day, zone.write(RAW_SCORECARDS, scorecard_id, clock.now(), payload, day)

        results = client.map(extract, tasks)
        stats = client.stats
    missing = sorted(f"{sid} ({day})" for sid, day, path in results if path is None)
    return dg.MaterializeResult(
        metadata={
            "days": len(window.days),
            "scorecard_days_landed": len(results) - len(missing),
            "scorecard_days_landed_by_earlier_attempt": len(done),
            "scorecards_not_found": dg.MetadataValue.json(missing),
            **_client_metadata(stats),
        }
    )


# -- warehouse tables -------------------------------------------------------------------------------


def _write_partition(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    table: str,
    frame: pd.DataFrame,
    window: PartitionWindow | None,
    extra_metadata: dict[str, Any] | None = None,
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """Validate, then write atomically; a frame that fails its model is reported and not written."""
    spec = TABLES[table]
    report = validate(spec, frame)
    check_metadata: dict[str, Any] = {"rows_checked": report.rows, "failures": dg.MetadataValue.json(report.summary())}
    if not report.passed:
        check_metadata["failure_cases"] = dg.MetadataValue.md(report.failure_cases.head(20).to_markdown(index=False))
    yield dg.AssetCheckResult(
        asset_key=table,
        check_name=SCHEMA_CHECK,
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=check_metadata,
    )
    if not report.passed:
        raise dg.Failure(
            description=f"{table}: {len(report.failure_cases)} schema failures, nothing written: {report.summary()}",
        )
    rows = warehouse.replace_partition(spec, frame, window) if window else warehouse.replace_table(spec, frame)
    context.log.info(f"{table}: wrote {rows} rows")
    yield dg.MaterializeResult(
        asset_key=table,
        metadata={
            "dagster/row_count": rows,
            "dagster/column_schema": _column_schema(spec),
            **(extra_metadata or {}),
        },
    )


@dg.multi_asset(
    specs=[
        _table_asset_spec(
            "fact_journey_step",
            raw_campaign_journeys,
            "One row per funnel step, campaign and UTC day (steps in served order).",
        ),
        _table_asset_spec(
            "rejected_journey_step",
            raw_campaign_journeys,
            "Steps kept out of the facts (no stepId, no contactCount, bad types), with the reason.",
        ),
    ],
    check_specs=[
        _schema_check("fact_journey_step"),
        _schema_check("rejected_journey_step"),
        dg.AssetCheckSpec(
            "no_rejected_steps",
            asset="rejected_journey_step",
            description="WARN when steps were quarantined (no stepId, no contactCount, untypable values).",
        ),
        dg.AssetCheckSpec(
            "no_unknown_step_fields",
            asset="fact_journey_step",
            description="WARN when steps carry fields the contract does not define (schema drift); never fatal.",
        ),
    ],
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    group_name="warehouse",
)
def journey_step_tables(
    context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource, clock: UtcClock
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """Rebuild the window's step rows from each campaign-day's latest landed extraction."""
    window = partition_window(context)
    zone = landing.zone()
    envelopes = [f.envelope for day in window.days for f in zone.latest_per_source(RAW_JOURNEYS, day).values()]
    result = journey_frames(envelopes, loaded_at=clock.now())
    reasons = Counter(result.rejected["reason"])
    for field_name, steps_with_field in sorted(result.unknown_fields.items()):
        context.log.warning(f"schema drift: {steps_with_field} steps carry unknown field {field_name!r}")
    yield from _write_partition(
        context,
        warehouse,
        "fact_journey_step",
        result.steps,
        window,
        {
            "campaign_days": len(envelopes),
            "rejected_steps": len(result.rejected),
            "unknown_step_fields": dg.MetadataValue.json(result.unknown_fields),
        },
    )
    yield from _write_partition(
        context,
        warehouse,
        "rejected_journey_step",
        result.rejected,
        window,
        {"reasons": dg.MetadataValue.json(dict(reasons))},
    )
    yield dg.AssetCheckResult(
        asset_key="rejected_journey_step",
        check_name="no_rejected_steps",
        passed=result.rejected.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rejected_steps": len(result.rejected), "reasons": dg.MetadataValue.json(dict(reasons))},
    )
    yield dg.AssetCheckResult(
        asset_key="fact_journey_step",
        check_name="no_unknown_step_fields",
        passed=not result.unknown_fields,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"unknown_fields": dg.MetadataValue.json(result.unknown_fields)},
    )


@dg.multi_asset(
    specs=[
        _table_asset_spec(
            "fact_scorecard_performance",
            raw_scorecards,
            "Append-only history of model performance: one row per scorecard, day and extraction.",
        ),
        _table_asset_spec(
            "fact_scorecard_score_distribution",
            raw_scorecards,
            "Contacts per score bucket for every scorecard snapshot.",
        ),
    ],
    check_specs=[_schema_check("fact_scorecard_performance"), _schema_check("fact_scorecard_score_distribution")],
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    group_name="warehouse",
)
def scorecard_tables(
    context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """Rebuild the window's scorecard history from every landed snapshot (nothing is overwritten)."""
    window = partition_window(context)
    zone = landing.zone()
    envelopes = [f.envelope for day in window.days for f in zone.files(RAW_SCORECARDS, day)]
    performance, distribution = scorecard_frames(envelopes)
    yield from _write_partition(
        context,
        warehouse,
        "fact_scorecard_performance",
        performance,
        window,
        {"snapshots": len(envelopes), "pending_backfill_rows": int(performance["pending_backfill"].sum())},
    )
    yield from _write_partition(context, warehouse, "fact_scorecard_score_distribution", distribution, window)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=["fact_journey_step", "fact_scorecard_performance"],
    check_specs=[_schema_check("fact_predictive_journey")],
    group_name="warehouse",
    kinds=TABLE_KINDS,
    owners=OWNERS,
)
def fact_predictive_journey(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, clock: UtcClock
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """The domain guide's target table: every step with its scorecard's latest snapshot for the day."""
    window = partition_window(context)
    steps = warehouse.read(TABLES["fact_journey_step"], window)
    performance = warehouse.read(TABLES["fact_scorecard_performance"], window)
    frame = predictive_journey_frame(steps, performance, loaded_at=clock.now())
    yield from _write_partition(
        context,
        warehouse,
        "fact_predictive_journey",
        frame,
        window,
        {"preview": dg.MetadataValue.md(_funnel_preview(frame))},
    )


def _funnel_preview(frame: pd.DataFrame, max_campaigns: int = 10) -> str:
    """A markdown table of the window's funnels: steps, contacts in and out, per campaign-day."""
    if frame.empty:
        return "_no steps in this window_"
    grouped = frame.sort_values("step_sequence").groupby(["extraction_date", "campaign_id"], sort=True)
    summary = grouped.agg(
        steps=("step_id", "size"),
        contacts_in=("contact_count", "first"),
        contacts_last_step=("contact_count", "last"),
        model_version=("model_version", "first"),
    ).reset_index()
    summary["extraction_date"] = summary["extraction_date"].dt.date
    return summary.head(max_campaigns).to_markdown(index=False)


@dg.asset(
    deps=[raw_campaign_journeys],
    backfill_policy=single_run,
    check_specs=[_schema_check("dim_predictive_campaign")],
    group_name="warehouse",
    kinds=TABLE_KINDS,
    owners=OWNERS,
)
def dim_predictive_campaign(
    context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """Every campaign ever listed, in its latest known state; archived campaigns stay."""
    listings = [f.envelope for f in landing.zone().files(CAMPAIGN_LISTING)]
    frame = campaign_dim_frame(listings)
    statuses = Counter(frame["status"])
    yield from _write_partition(
        context, warehouse, "dim_predictive_campaign", frame, None, {"statuses": dg.MetadataValue.json(dict(statuses))}
    )
