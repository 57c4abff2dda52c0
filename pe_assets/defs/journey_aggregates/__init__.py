"""The real Genesys Cloud source (PE_SOURCE=journey-aggregates): the daily action-map funnel from
``/api/v2/analytics/journeys/aggregates`` and the action maps as its dimension. No scorecards:
Genesys withdrew journey outcome scoring (2026-05-25), so no seed endpoint is ever called."""

import dagster as dg

from pe_assets.config import JOURNEY_AGGREGATES, Settings
from pe_assets.defs.common.tables import GraphParts
from pe_assets.defs.journey_aggregates.assets import build_assets

SOURCE = JOURNEY_AGGREGATES


def build_defs(settings: Settings) -> dg.Definitions:
    if settings.source != SOURCE:
        return dg.Definitions()
    return dg.Definitions(assets=build_assets(GraphParts.from_settings(settings)))
