"""Dashboard views over the facts (funnel drop-off, daily snapshot), on DuckDB and Snowflake.

The views' SQL lives in ``pe_assets/sql/view_*.sql`` (one portable SELECT each, readable by
analysts and DBAs) and is installed with ``CREATE OR REPLACE VIEW``: a view holds no rows, so
re-creating it is cheap and idempotent, and it always shows the facts as they are now.

    fact_predictive_journey --> funnel_daily --> funnel_daily_snapshot
"""

from collections.abc import Iterator

import dagster as dg

from pe_assets.defs.common.tables import OWNERS, GraphParts
from pe_assets.sql import shipped_sql
from pe_assets.warehouse import WarehouseResource
from pe_assets.warehouse.base import WarehouseError

SOURCE_TABLE = "fact_predictive_journey"
# In creation order: funnel_daily_snapshot selects from funnel_daily.
VIEW_FILES: dict[str, str] = {
    "funnel_daily": "view_funnel_daily.sql",
    "funnel_daily_snapshot": "view_funnel_daily_snapshot.sql",
}


def view_sql(name: str) -> str:
    """The SELECT behind a view, as shipped in ``pe_assets/sql``."""
    return shipped_sql(VIEW_FILES[name]).strip().rstrip(";")


def create_views(warehouse: WarehouseResource) -> dict[str, int]:
    """Create or replace every view, in dependency order; return each view's row count."""
    counts: dict[str, int] = {}
    for name in VIEW_FILES:
        try:
            warehouse.create_or_replace_view(name, view_sql(name))
        except Exception as exc:
            raise WarehouseError(
                f"view {name} could not be created (has {SOURCE_TABLE} been materialized?): {exc}"
            ) from exc
        counts[name] = int(warehouse.query(f"SELECT COUNT(*) AS n FROM {name}")["n"].iloc[0])
    return counts


def build_funnel_views(parts: GraphParts) -> dg.AssetsDefinition:
    """The funnel views as one multi-asset (its kinds show the warehouse they live in)."""
    kinds = {"sql", parts.settings.warehouse}

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                "funnel_daily",
                deps=[SOURCE_TABLE],
                description=(
                    "View: one row per campaign, UTC day and funnel step with the step's contacts, the previous "
                    "step's, and the drop-off between them (count and rate)."
                ),
                kinds=kinds,
                owners=OWNERS,
                tags=parts.source_tags,
            ),
            dg.AssetSpec(
                "funnel_daily_snapshot",
                deps=["funnel_daily"],
                description=(
                    "View: one row per campaign and UTC day: contacts in (first step), converted (last step), "
                    "conversion rate, and the step with the largest drop-off."
                ),
                kinds=kinds,
                owners=OWNERS,
                tags=parts.source_tags,
            ),
        ],
        backfill_policy=parts.single_run,
        group_name="warehouse",
    )
    def funnel_views(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> Iterator[dg.MaterializeResult]:
        """Create or replace the funnel views (no data moves: they read fact_predictive_journey live)."""
        counts = create_views(warehouse)
        for name, rows in counts.items():
            context.log.info(f"view {name}: {rows} rows")
            yield dg.MaterializeResult(
                asset_key=name,
                metadata={
                    "dagster/row_count": rows,
                    "warehouse": warehouse.kind,
                    "sql": dg.MetadataValue.md(f"```sql\n{view_sql(name)}\n```"),
                },
            )

    return funnel_views
