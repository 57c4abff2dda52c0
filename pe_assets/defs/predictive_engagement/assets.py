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

import functools
import json
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import dagster as dg
import pandas as pd

from pe_assets.client import NotFoundError
from pe_assets.defs.common.checks import markdown
from pe_assets.defs.common.resources import LandingZoneResource, PredictiveEngagementResource, UtcClock
from pe_assets.defs.common.tables import (
    API_POOL,
    OWNERS,
    GraphParts,
    TableChunk,
    WarehouseRows,
    client_metadata,
    extraction_progress,
    landed_by_run,
    landed_chunks,
    permanent_api_errors_fail_fast,
    schema_check,
    sized_chunks,
    table_asset_spec,
    table_chunks,
    table_definition_metadata,
    write_partition,
    write_tables,
)
from pe_assets.rules import partition_window
from pe_assets.transform.predictive_engagement import (
    PREDICTIVE_JOURNEY_SQL,
    campaign_dim_frame,
    journey_frames_from_json,
    predictive_journey_params,
    scorecard_frames,
)
from pe_assets.warehouse import WarehouseResource

EXTRACTED_STATUSES = ("active", "paused")  # archived campaigns answer 404 on analytics
CAMPAIGN_LISTING = "campaign_listing"
RAW_JOURNEYS = "raw_campaign_journeys"
RAW_SCORECARDS = "raw_scorecards"


#: The window's first funnels (by day, then campaign), as ``_funnel_preview`` shows them.
_PREVIEW_SQL = """
SELECT f.extraction_date, f.campaign_id, f.step_id, f.step_sequence, f.contact_count, f.model_version
FROM fact_predictive_journey f
JOIN (
    SELECT DISTINCT extraction_date, campaign_id FROM fact_predictive_journey WHERE {window}
    ORDER BY extraction_date, campaign_id LIMIT 10
) first_funnels ON f.extraction_date = first_funnels.extraction_date AND f.campaign_id = first_funnels.campaign_id
"""


def _funnel_preview(frame: pd.DataFrame, max_campaigns: int = 10) -> dg.MetadataValue:
    """A markdown table of the window's funnels: steps, contacts in and out, per campaign-day."""
    if frame.empty:
        return dg.MetadataValue.md("_no steps in this window_")
    grouped = frame.sort_values("step_sequence").groupby(["extraction_date", "campaign_id"], sort=True)
    summary = grouped.agg(
        steps=("step_id", "size"),
        contacts_in=("contact_count", "first"),
        contacts_last_step=("contact_count", "last"),
        model_version=("model_version", "first"),
    ).reset_index()
    summary["extraction_date"] = summary["extraction_date"].dt.date
    return markdown(summary.head(max_campaigns))


def build_assets(parts: GraphParts) -> list[dg.AssetsDefinition]:
    """The source's assets, partitioned by ``parts.partitions`` (settings are read before, once)."""

    # -- raw extraction ---------------------------------------------------------------------------------

    @dg.multi_asset(
        name="raw_extraction",
        specs=[
            dg.AssetSpec(
                RAW_JOURNEYS,
                description=(
                    "Each active or paused campaign's journey funnel for each day, as served, in the landing zone. "
                    "The campaign listing decides what is extracted (status comes from it) and is landed too. All "
                    "pages of a campaign-day land as one file, or none: a campaign archived in the middle of its "
                    "pagination answers 404 and is recorded, not half-landed."
                ),
                group_name="raw",
                kinds={"api", "json"},
                owners=OWNERS,
                tags=parts.source_tags,
                skippable=True,
            ),
            dg.AssetSpec(
                RAW_SCORECARDS,
                description=(
                    "Each day's model performance for every scorecard the day's extracted campaigns use, fetched "
                    "once per scorecard and day. Every extraction is kept: outcomes are backfilled up to 48 h after "
                    "a day ends and retraining rewrites past metrics, so the history of snapshots is the record."
                ),
                group_name="raw",
                kinds={"api", "json"},
                owners=OWNERS,
                tags=parts.source_tags,
                skippable=True,
            ),
        ],
        partitions_def=parts.partitions,
        backfill_policy=parts.backfill_policy,
        retry_policy=parts.api_retry_policy,
        pool=API_POOL,
        can_subset=True,
    )
    def raw_extraction(
        context: dg.AssetExecutionContext,
        pe_api: PredictiveEngagementResource,
        landing: LandingZoneResource,
        clock: UtcClock,
    ) -> Iterator[dg.MaterializeResult]:
        """Every API request of the run in one step and one stretch: journeys and scorecards share the pool.

        The scorecard requests start with the journey requests, as soon as the campaign listing says which
        scorecards the day's campaigns use (a scorecard shared by many campaigns is fetched once per day).
        Selected alone (``pe_scorecard_refresh_job``), scorecards follow the days' landed journeys instead.
        """
        selected = {key.to_user_string() for key in context.selected_asset_keys}
        window = partition_window(context)
        zone = landing.zone()
        journeys_done = landed_by_run(context, zone, RAW_JOURNEYS, window.days)
        scorecards_done = landed_by_run(context, zone, RAW_SCORECARDS, window.days)
        with (
            permanent_api_errors_fail_fast(),
            pe_api.client() as client,
            # Scorecard answers wait here, not in memory, until the step's last request (see below).
            tempfile.TemporaryFile(mode="w+", encoding="utf-8") as held_snapshots,
        ):
            campaigns: list[dict[str, Any]] = []
            extracted: list[dict[str, Any]] = []
            if RAW_JOURNEYS in selected:
                listing_pages = client.list_campaign_pages()
                zone.write(CAMPAIGN_LISTING, "all", clock.now(), {"run_id": context.run_id, "pages": listing_pages})
                campaigns = [c for page in listing_pages for c in page["entities"]]
                extracted = [c for c in campaigns if c["status"] in EXTRACTED_STATUSES]
                listed_scorecards = sorted({c["scorecardId"] for c in extracted if c.get("scorecardId")})
                scorecards_by_day = dict.fromkeys(window.days, listed_scorecards)
            else:
                scorecards_by_day = {
                    day: sorted(
                        {
                            f.envelope["campaign"]["scorecardId"]
                            for f in zone.latest_per_source(RAW_JOURNEYS, day).values()
                            if f.envelope.get("campaign", {}).get("scorecardId")
                        }
                    )
                    for day in window.days
                }

            def tasks_of(days: list[date]) -> list[tuple[str, dict[str, Any], date]]:
                """The chunk's journey and scorecard requests, day by day (journeys first each day)."""
                journey_tasks = [
                    ("journey", c, day) for day in days for c in extracted if (c["id"], day) not in journeys_done
                ]
                scorecard_tasks = (
                    [
                        ("scorecard", {"id": sid}, day)
                        for day in days
                        for sid in scorecards_by_day[day]
                        if (sid, day) not in scorecards_done
                    ]
                    if RAW_SCORECARDS in selected
                    else []
                )
                return sorted(journey_tasks + scorecard_tasks, key=lambda task: task[2])

            # Chunks of days sized by their requests: more campaigns make shorter chunks, not bigger ones.
            requests_by_day = {day: len(tasks_of([day])) for day in window.days}
            chunks = [chunk.days for chunk in sized_chunks(window, requests_by_day.__getitem__)]
            progress = extraction_progress(
                context, client, sum(requests_by_day.values()), "campaign-days and scorecard-days"
            )
            # Snapshots are history (append-only): one taken by an attempt that then fails would stay
            # beside the re-run's. So scorecard answers land once every request of the step is done;
            # until then they wait in a temporary file, not in memory (a year is ~50,000 snapshots).
            # Journeys land at once (the newest file of a campaign-day wins, so a re-run replaces it).
            held_lock = threading.Lock()

            def extract(task: tuple[str, dict[str, Any], date]) -> tuple[str, str, date, bool]:
                kind, source, day = task
                try:
                    if kind == "journey":
                        pages = client.get_campaign_journey_pages(source["id"], day)
                        payload = {"run_id": context.run_id, "campaign": source, "pages": pages}
                        zone.write(RAW_JOURNEYS, source["id"], clock.now(), payload, day)
                    else:
                        response = client.get_scorecard_performance(source["id"], day)
                        held = [source["id"], day.isoformat(), clock.now().isoformat(), response]
                        line = json.dumps(held, ensure_ascii=False) + "\n"  # the landing write judges NaN
                        with held_lock:
                            held_snapshots.write(line)
                except NotFoundError:
                    return kind, source["id"], day, False  # archived since the listing / scorecard gone
                finally:
                    progress.advance()
                return kind, source["id"], day, True

            # A chunk of days at a time (memory is bounded by a chunk, not the range), day by day
            # within it: every request of the run draws on one pool and budget.
            landed: Counter[str] = Counter()
            not_landed: dict[str, list[str]] = {"journey": [], "scorecard": []}
            for days in chunks:
                for kind, source_id, day, was_landed in client.map(extract, tasks_of(days)):
                    if was_landed:
                        landed[kind] += 1
                    else:
                        not_landed[kind].append(f"{source_id} ({day})")
            held_snapshots.seek(0)
            for line in held_snapshots:
                scorecard_id, day_text, extracted_text, response = json.loads(line)
                zone.write(
                    RAW_SCORECARDS,
                    scorecard_id,
                    datetime.fromisoformat(extracted_text),
                    {"run_id": context.run_id, "response": response},
                    date.fromisoformat(day_text),
                )
            progress.finish()
            stats = client.stats

        api_metadata = client_metadata(stats)
        if RAW_JOURNEYS in selected:
            archived_during_run = sorted(set(not_landed["journey"]))
            if archived_during_run:
                context.log.warning(f"{len(archived_during_run)} campaign-days were archived during extraction")
            yield dg.MaterializeResult(
                asset_key=RAW_JOURNEYS,
                metadata={
                    "days": len(window.days),
                    "campaigns_listed": len(campaigns),
                    "campaigns_extracted": len(extracted),
                    "campaigns_skipped_archived": len(campaigns) - len(extracted),
                    "campaign_days_landed": landed["journey"],
                    "campaign_days_landed_by_earlier_attempt": len(journeys_done),
                    "campaign_days_archived_during_run": len(archived_during_run),
                    "archived_during_run": dg.MetadataValue.json(archived_during_run),
                    **api_metadata,
                },
            )
        if RAW_SCORECARDS in selected:
            yield dg.MaterializeResult(
                asset_key=RAW_SCORECARDS,
                metadata={
                    "days": len(window.days),
                    "scorecard_days_landed": landed["scorecard"],
                    "scorecard_days_landed_by_earlier_attempt": len(scorecards_done),
                    "scorecards_not_found": dg.MetadataValue.json(sorted(not_landed["scorecard"])),
                    **api_metadata,
                },
            )

    # -- warehouse tables -------------------------------------------------------------------------------

    @dg.multi_asset(
        specs=[
            table_asset_spec(
                parts,
                "fact_journey_step",
                RAW_JOURNEYS,
                "One row per funnel step, campaign and UTC day (steps in served order).",
            ),
            table_asset_spec(
                parts,
                "rejected_journey_step",
                RAW_JOURNEYS,
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
        """Rebuild the window's steps from each campaign-day's latest landed extraction, a chunk of days at a time."""
        zone = landing.zone()
        loaded_at = clock.now()
        campaign_days = 0
        reasons: Counter[str] = Counter()
        unknown_fields: Counter[str] = Counter()

        def chunks() -> Iterator[TableChunk]:
            nonlocal campaign_days
            # The next chunk's files are read while DuckDB flattens this one (it runs outside the GIL).
            for chunk, texts in landed_chunks(
                zone, RAW_JOURNEYS, partition_window(context), latest=True, read=zone.read_texts
            ):
                result = journey_frames_from_json(texts, loaded_at=loaded_at)
                campaign_days += len(texts)
                reasons.update(result.rejected["reason"])
                unknown_fields.update(result.unknown_fields)
                yield {"fact_journey_step": (result.steps, chunk), "rejected_journey_step": (result.rejected, chunk)}

        def metadata() -> dict[str, dict[str, Any]]:
            for field_name, steps_with_field in sorted(unknown_fields.items()):
                context.log.warning(f"schema drift: {steps_with_field} steps carry unknown field {field_name!r}")
            return {
                "fact_journey_step": {
                    "campaign_days": campaign_days,
                    "rejected_steps": reasons.total(),
                    "unknown_step_fields": dg.MetadataValue.json(dict(unknown_fields)),
                },
                "rejected_journey_step": {"reasons": dg.MetadataValue.json(dict(reasons))},
            }

        yield from write_tables(context, warehouse, chunks(), metadata)
        yield dg.AssetCheckResult(
            asset_key="rejected_journey_step",
            check_name="no_rejected_steps",
            passed=not reasons,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"rejected_steps": reasons.total(), "reasons": dg.MetadataValue.json(dict(reasons))},
        )
        yield dg.AssetCheckResult(
            asset_key="fact_journey_step",
            check_name="no_unknown_step_fields",
            passed=not unknown_fields,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"unknown_fields": dg.MetadataValue.json(dict(unknown_fields))},
        )

    @dg.multi_asset(
        specs=[
            table_asset_spec(
                parts,
                "fact_scorecard_performance",
                RAW_SCORECARDS,
                "Append-only history of model performance: one row per scorecard, day and extraction.",
            ),
            table_asset_spec(
                parts,
                "fact_scorecard_score_distribution",
                RAW_SCORECARDS,
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
        zone = landing.zone()
        snapshots = pending_rows = 0

        def chunks() -> Iterator[TableChunk]:
            nonlocal snapshots, pending_rows
            # The next chunk's files are listed and parsed while this one becomes frames.
            read = functools.partial(zone.read_files, RAW_SCORECARDS)
            for chunk, files in landed_chunks(zone, RAW_SCORECARDS, partition_window(context), latest=False, read=read):
                envelopes = [f.envelope for f in files]
                performance, distribution = scorecard_frames(envelopes)
                snapshots += len(envelopes)
                pending_rows += int(performance["pending_backfill"].sum())
                yield {
                    "fact_scorecard_performance": (performance, chunk),
                    "fact_scorecard_score_distribution": (distribution, chunk),
                }

        yield from write_tables(
            context,
            warehouse,
            chunks(),
            lambda: {"fact_scorecard_performance": {"snapshots": snapshots, "pending_backfill_rows": pending_rows}},
        )

    @dg.asset(
        partitions_def=parts.partitions,
        backfill_policy=parts.backfill_policy,
        deps=["fact_journey_step", "fact_scorecard_performance"],
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
        """The domain guide's target table: every step with its scorecard's latest snapshot for the day."""
        loaded_at = clock.now()
        window = partition_window(context)

        def chunks() -> Iterator[TableChunk]:
            for chunk in table_chunks(warehouse, "fact_journey_step", "campaign_id", window):
                # Joined, checked and written where the rows are: they never come to Python.
                rows = WarehouseRows(PREDICTIVE_JOURNEY_SQL, predictive_journey_params(chunk, loaded_at))
                yield {"fact_predictive_journey": (rows, chunk)}

        def metadata() -> dict[str, dict[str, Any]]:
            preview_sql = _PREVIEW_SQL.format(window=window.sql_condition("extraction_date"))
            first_funnels = warehouse.query(preview_sql, window.sql_params)
            first_funnels["extraction_date"] = pd.to_datetime(first_funnels["extraction_date"])
            return {"fact_predictive_journey": {"preview": _funnel_preview(first_funnels)}}

        yield from write_tables(context, warehouse, chunks(), metadata)

    @dg.asset(
        deps=[RAW_JOURNEYS],
        backfill_policy=parts.single_run,
        check_specs=[schema_check("dim_predictive_campaign")],
        group_name="warehouse",
        kinds=set(parts.table_kinds),
        owners=OWNERS,
        tags=parts.source_tags,
        metadata=table_definition_metadata("dim_predictive_campaign"),
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
        raw_extraction,
        journey_step_tables,
        scorecard_tables,
        fact_predictive_journey,
        dim_predictive_campaign,
    ]
