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
from collections.abc import Iterator
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd

from pe_assets.client import NotFoundError
from pe_assets.defs.common.resources import LandingZoneResource, PredictiveEngagementResource, UtcClock
from pe_assets.defs.common.tables import (
    API_POOL,
    OWNERS,
    GraphParts,
    client_metadata,
    landed_by_run,
    permanent_api_errors_fail_fast,
    schema_check,
    table_asset_spec,
    write_partition,
)
from pe_assets.rules import partition_window
from pe_assets.schemas import TABLES
from pe_assets.transform.predictive_engagement import (
    campaign_dim_frame,
    journey_frames,
    predictive_journey_frame,
    scorecard_frames,
)
from pe_assets.warehouse import WarehouseResource

EXTRACTED_STATUSES = ("active", "paused")  # archived campaigns answer 404 on analytics
CAMPAIGN_LISTING = "campaign_listing"
RAW_JOURNEYS = "raw_campaign_journeys"
RAW_SCORECARDS = "raw_scorecards"


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


def build_assets(parts: GraphParts) -> list[dg.AssetsDefinition]:
    """The source's assets, partitioned by ``parts.partitions`` (settings are read before, once)."""

    # -- raw extraction ---------------------------------------------------------------------------------

    @dg.asset(
        partitions_def=parts.partitions,
        backfill_policy=parts.backfill_policy,
        retry_policy=parts.api_retry_policy,
        pool=API_POOL,
        group_name="raw",
        kinds={"api", "json"},
        owners=OWNERS,
        tags=parts.source_tags,
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
        done = landed_by_run(zone, RAW_JOURNEYS, window.days, context.run_id)
        with permanent_api_errors_fail_fast(), pe_api.client() as client:
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
                **client_metadata(stats),
            }
        )

    @dg.asset(
        partitions_def=parts.partitions,
        backfill_policy=parts.backfill_policy,
        retry_policy=parts.api_retry_policy,
        pool=API_POOL,
        deps=[raw_campaign_journeys],
        group_name="raw",
        kinds={"api", "json"},
        owners=OWNERS,
        tags=parts.source_tags,
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
        done = landed_by_run(zone, RAW_SCORECARDS, window.days, context.run_id)
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
        with permanent_api_errors_fail_fast(), pe_api.client() as client:

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
                **client_metadata(stats),
            }
        )

    # -- warehouse tables -------------------------------------------------------------------------------

    @dg.multi_asset(
        specs=[
            table_asset_spec(
                parts,
                "fact_journey_step",
                raw_campaign_journeys,
                "One row per funnel step, campaign and UTC day (steps in served order).",
            ),
            table_asset_spec(
                parts,
                "rejected_journey_step",
                raw_campaign_journeys,
                "Steps kept out of the facts (no stepId, no contactCount, bad types), with the reason.",
            ),
        ],
        check_specs=[
            schema_check("fact_journey_step"),
            schema_check("rejected_journey_step"),
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
        partitions_def=parts.partitions,
        backfill_policy=parts.backfill_policy,
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
        yield from write_partition(
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
        yield from write_partition(
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
            table_asset_spec(
                parts,
                "fact_scorecard_performance",
                raw_scorecards,
                "Append-only history of model performance: one row per scorecard, day and extraction.",
            ),
            table_asset_spec(
                parts,
                "fact_scorecard_score_distribution",
                raw_scorecards,
                "Contacts per score bucket for every scorecard snapshot.",
            ),
        ],
        check_specs=[schema_check("fact_scorecard_performance"), schema_check("fact_scorecard_score_distribution")],
        partitions_def=parts.partitions,
        backfill_policy=parts.backfill_policy,
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
        yield from write_partition(
            context,
            warehouse,
            "fact_scorecard_performance",
            performance,
            window,
            {"snapshots": len(envelopes), "pending_backfill_rows": int(performance["pending_backfill"].sum())},
        )
        yield from write_partition(context, warehouse, "fact_scorecard_score_distribution", distribution, window)

    @dg.asset(
        partitions_def=parts.partitions,
        backfill_policy=parts.backfill_policy,
        deps=["fact_journey_step", "fact_scorecard_performance"],
        check_specs=[schema_check("fact_predictive_journey")],
        group_name="warehouse",
        kinds=set(parts.table_kinds),
        owners=OWNERS,
        tags=parts.source_tags,
    )
    def fact_predictive_journey(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, clock: UtcClock
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        """The domain guide's target table: every step with its scorecard's latest snapshot for the day."""
        window = partition_window(context)
        steps = warehouse.read(TABLES["fact_journey_step"], window)
        performance = warehouse.read(TABLES["fact_scorecard_performance"], window)
        frame = predictive_journey_frame(steps, performance, loaded_at=clock.now())
        yield from write_partition(
            context,
            warehouse,
            "fact_predictive_journey",
            frame,
            window,
            {"preview": dg.MetadataValue.md(_funnel_preview(frame))},
        )

    @dg.asset(
        deps=[raw_campaign_journeys],
        backfill_policy=parts.single_run,
        check_specs=[schema_check("dim_predictive_campaign")],
        group_name="warehouse",
        kinds=set(parts.table_kinds),
        owners=OWNERS,
        tags=parts.source_tags,
    )
    def dim_predictive_campaign(
        context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        """Every campaign ever listed, in its latest known state; archived campaigns stay."""
        listings = [f.envelope for f in landing.zone().files(CAMPAIGN_LISTING)]
        frame = campaign_dim_frame(listings)
        statuses = Counter(frame["status"])
        yield from write_partition(
            context,
            warehouse,
            "dim_predictive_campaign",
            frame,
            None,
            {"statuses": dg.MetadataValue.json(dict(statuses))},
        )

    return [
        raw_campaign_journeys,
        raw_scorecards,
        journey_step_tables,
        scorecard_tables,
        fact_predictive_journey,
        dim_predictive_campaign,
    ]
