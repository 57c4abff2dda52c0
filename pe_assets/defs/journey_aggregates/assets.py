"""The real Genesys source's graph: action maps and the daily action-map funnel from journey aggregates.

    raw_journey_aggregates --> fact_journey_step --> fact_predictive_journey --> funnel views
             |
             +--> dim_predictive_campaign, dim_action_map

``raw_journey_aggregates`` lists the action maps (landed as ``action_map_listing``) and asks for
the window's funnel with one query per <= 31-day chunk (the async job family when the server
answers 413); every answer lands unchanged once, and each day it covers gets a pointer to it
(``pe_assets.landing``). The tables are rebuilt from the landing zone: a day reads the answer its
newest pointer names. The same table names as the seed source, so the funnel views and dashboards
serve either; scorecard columns are NULL (Genesys withdrew outcome scoring).
"""

from collections.abc import Iterator
from datetime import date, timedelta
from itertools import groupby
from typing import Any

import dagster as dg
import pandas as pd

from pe_assets.client.journey_aggregates import SchemaDrift, schema_drift
from pe_assets.defs.common.checks import SAMPLE_ROWS, markdown
from pe_assets.defs.common.resources import LandingZoneResource, PredictiveEngagementResource, UtcClock
from pe_assets.defs.common.tables import (
    API_POOL,
    OWNERS,
    GraphParts,
    TableChunk,
    client_metadata,
    extraction_progress,
    landed_by_run,
    permanent_api_errors_fail_fast,
    schema_check,
    table_asset_spec,
    table_chunks,
    table_definition_metadata,
    window_chunks,
    write_partition,
    write_tables,
)
from pe_assets.landing import LandingZone
from pe_assets.rules import PartitionWindow, partition_window
from pe_assets.schemas import TABLES, typed_frame
from pe_assets.transform.journey_aggregates import FUNNEL_STEPS, action_map_frames, journey_step_frame
from pe_assets.transform.predictive_engagement import predictive_journey_frame
from pe_assets.warehouse import WarehouseResource

RAW_AGGREGATES = "raw_journey_aggregates"
ACTION_MAP_LISTING = "action_map_listing"
#: The source id of a day's pointer files (one pointer per landing of an answer covering the day).
DAY_POINTER = "chunk"


def contiguous_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Sorted days as half-open ``[start, end)`` runs of consecutive days."""
    ranges: list[tuple[date, date]] = []
    for _, run in groupby(enumerate(sorted(days)), key=lambda pair: pair[1] - timedelta(days=pair[0])):
        members = [day for _, day in run]
        ranges.append((members[0], members[-1] + timedelta(days=1)))
    return ranges


def latest_chunks(zone: LandingZone, window: PartitionWindow) -> list[tuple[dict[str, Any], list[date]]]:
    """Each landed answer that a day of ``window`` points to (its newest pointer), with those days."""
    days_by_chunk: dict[str, list[date]] = {}
    for day in window.days:
        pointer = zone.latest_per_source(RAW_AGGREGATES, day).get(DAY_POINTER)
        if pointer is not None:
            days_by_chunk.setdefault(pointer.envelope["chunk"], []).append(day)
    return [(zone.read(RAW_AGGREGATES, name).envelope, days) for name, days in sorted(days_by_chunk.items())]


def build_assets(parts: GraphParts) -> list[dg.AssetsDefinition]:
    """The source's assets, partitioned by ``parts.partitions``."""

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
    def raw_journey_aggregates(
        context: dg.AssetExecutionContext,
        pe_api: PredictiveEngagementResource,
        landing: LandingZoneResource,
        clock: UtcClock,
    ) -> dg.MaterializeResult:
        """Genesys journey aggregates: every action map's daily funnel, as served, in the landing zone.

        ``POST /api/v2/analytics/journeys/aggregates/query`` (granularity P1D, grouped by
        journeyActionMapId, the 11 funnel metrics), one query per <= 31-day chunk of the run's window,
        and ``GET /api/v2/journey/actionmaps`` for the dimension. Needs the permissions
        ``analytics:journeyAggregate:view`` and ``journey:actionmap:view``.
        """
        window = partition_window(context)
        zone = landing.zone()
        done = {day for _, day in landed_by_run(context, zone, RAW_AGGREGATES, window.days)}
        todo = [day for day in window.days if day not in done]
        chunks = []
        with permanent_api_errors_fail_fast(), pe_api.journey_client() as client:
            listing_pages = client.list_action_map_pages()
            zone.write(ACTION_MAP_LISTING, "all", clock.now(), {"run_id": context.run_id, "pages": listing_pages})
            ranges = contiguous_ranges(todo)
            progress = extraction_progress(context, client, sum((e - s).days for s, e in ranges), "days")
            for start, end in ranges:
                for chunk in client.query_funnel(start, end):
                    path = zone.write(
                        RAW_AGGREGATES,
                        f"{chunk.start}_{chunk.end}",
                        clock.now(),
                        {
                            "run_id": context.run_id,
                            "start": chunk.start.isoformat(),
                            "end": chunk.end.isoformat(),
                            "interval": chunk.interval,
                            "query": chunk.query,
                            "mode": chunk.mode,
                            "job_id": chunk.job_id,
                            "correlation_ids": list(chunk.correlation_ids),
                            "responses": list(chunk.responses),
                        },
                    )
                    name = path.rsplit("/", 1)[-1]
                    for day in PartitionWindow(chunk.start, chunk.end).days:
                        pointer = {"run_id": context.run_id, "chunk": name, "start": chunk.start.isoformat()}
                        zone.write(RAW_AGGREGATES, DAY_POINTER, clock.now(), pointer, day)
                    chunks.append(chunk)
                    progress.advance((chunk.end - chunk.start).days)
            progress.finish()
            stats = client.stats
        return dg.MaterializeResult(
            metadata={
                "days": len(window.days),
                "days_landed_by_earlier_attempt": len(done),
                "action_maps_listed": sum(len(page.get("entities") or []) for page in listing_pages),
                "aggregate_queries": len(chunks),
                "async_jobs": sum(1 for chunk in chunks if chunk.mode == "async"),
                "map_days_with_data": sum(len(chunk.counts) for chunk in chunks),
                **client_metadata(stats),
            }
        )

    @dg.asset(
        partitions_def=parts.partitions,
        backfill_policy=parts.backfill_policy,
        deps=[raw_journey_aggregates],
        check_specs=[
            schema_check("fact_journey_step"),
            dg.AssetCheckSpec(
                "conversion_rate_at_most_one",
                asset="fact_journey_step",
                description=(
                    "WARN when a step's conversion_rate (count / qualified) passes 1: journey aggregates "
                    "count events and the funnel is not strictly nested. Rows are kept, never clamped."
                ),
            ),
            dg.AssetCheckSpec(
                "no_unknown_aggregate_fields",
                asset="fact_journey_step",
                description="WARN when answers carry metrics, dimensions or fields the contract does not define.",
            ),
        ],
        group_name="warehouse",
        kinds=set(parts.table_kinds),
        owners=OWNERS,
        tags=parts.source_tags,
        metadata=table_definition_metadata("fact_journey_step"),
    )
    def fact_journey_step(
        context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource, clock: UtcClock
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        """11 rows per action map and UTC day with data (the funnel dictionary), from the landed answers."""
        zone = landing.zone()
        loaded_at = clock.now()
        answers = map_days = 0
        over_one_rows: list[pd.DataFrame] = []
        drifts: list[SchemaDrift] = []

        def chunks() -> Iterator[TableChunk]:
            nonlocal answers, map_days
            for chunk in window_chunks(partition_window(context)):
                landed = latest_chunks(zone, chunk)
                frame = journey_step_frame(landed, loaded_at=loaded_at)
                answers += len(landed)
                map_days += len(frame) // len(FUNNEL_STEPS)
                over_one_rows.append(frame[frame["conversion_rate"] > 1.0])
                drifts.append(schema_drift(response for envelope, _ in landed for response in envelope["responses"]))
                yield {"fact_journey_step": (frame, chunk)}

        def metadata() -> dict[str, dict[str, Any]]:
            rates_above_one = sum(len(rows) for rows in over_one_rows)
            return {"fact_journey_step": {"answers": answers, "map_days": map_days, "rates_above_one": rates_above_one}}

        yield from write_tables(context, warehouse, chunks(), metadata)
        over_one = pd.concat(over_one_rows)
        drift = SchemaDrift.merge(drifts)
        if drift:
            context.log.warning(f"schema drift in journey aggregates: {drift}")
        yield dg.AssetCheckResult(
            asset_key="fact_journey_step",
            check_name="conversion_rate_at_most_one",
            passed=over_one.empty,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "rows_above_one": len(over_one),
                "sample": markdown(
                    over_one[["campaign_id", "extraction_date", "step_id", "contact_count", "conversion_rate"]],
                    max_rows=SAMPLE_ROWS,
                ),
            },
        )
        yield dg.AssetCheckResult(
            asset_key="fact_journey_step",
            check_name="no_unknown_aggregate_fields",
            passed=not drift,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "unknown_metrics": dg.MetadataValue.json(list(drift.unknown_metrics)),
                "unrequested_metrics": dg.MetadataValue.json(list(drift.unrequested_metrics)),
                "unknown_dimensions": dg.MetadataValue.json(list(drift.unknown_dimensions)),
                "unknown_fields": dg.MetadataValue.json(list(drift.unknown_fields)),
            },
        )

    @dg.asset(
        partitions_def=parts.partitions,
        backfill_policy=parts.backfill_policy,
        deps=[fact_journey_step],
        check_specs=[schema_check("fact_predictive_journey")],
        group_name="warehouse",
        kinds=set(parts.table_kinds),
        owners=OWNERS,
        tags=parts.source_tags,
        metadata=table_definition_metadata("fact_predictive_journey"),
    )
    def fact_predictive_journey(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, clock: UtcClock
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        """Every funnel step of fact_journey_step; the scorecard columns are NULL for this source."""
        loaded_at = clock.now()
        no_scorecards = typed_frame(TABLES["fact_scorecard_performance"], [])

        def chunks() -> Iterator[TableChunk]:
            window = partition_window(context)
            for chunk in table_chunks(warehouse, "fact_journey_step", "campaign_id", window):
                steps = warehouse.read(TABLES["fact_journey_step"], chunk)
                yield {"fact_predictive_journey": (predictive_journey_frame(steps, no_scorecards, loaded_at), chunk)}

        yield from write_tables(context, warehouse, chunks())

    @dg.multi_asset(
        specs=[
            table_asset_spec(
                parts,
                "dim_predictive_campaign",
                raw_journey_aggregates,
                "Every action map ever listed as a campaign (status from isActive, no scorecard).",
            ),
            table_asset_spec(
                parts, "dim_action_map", raw_journey_aggregates, "Every action map ever listed, with its own fields."
            ),
        ],
        check_specs=[schema_check("dim_predictive_campaign"), schema_check("dim_action_map")],
        backfill_policy=parts.single_run,
        group_name="warehouse",
    )
    def action_map_dims(
        context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        """Every action map ever listed, in its latest known state; maps no longer listed stay."""
        listings = [f.envelope for f in landing.zone().files(ACTION_MAP_LISTING)]
        campaigns, maps = action_map_frames(listings)
        yield from write_partition(context, warehouse, "dim_predictive_campaign", campaigns, None)
        yield from write_partition(context, warehouse, "dim_action_map", maps, None)

    return [raw_journey_aggregates, fact_journey_step, fact_predictive_journey, action_map_dims]
