"""The seed contract's source (``/api/v2/predictive-engagement/...``, PE_SOURCE=predictive-engagement):
campaign journeys and scorecards, their tables, the scorecard checks, drift and sensors."""

import dagster as dg

from pe_assets.config import PREDICTIVE_ENGAGEMENT, Settings
from pe_assets.defs.common.tables import GraphParts
from pe_assets.defs.predictive_engagement.assets import build_assets
from pe_assets.defs.predictive_engagement.automation import build_scorecard_automation
from pe_assets.defs.predictive_engagement.checks import build_scorecard_checks
from pe_assets.defs.predictive_engagement.monitoring import build_monitoring

SOURCE = PREDICTIVE_ENGAGEMENT


def build_defs(settings: Settings) -> dg.Definitions:
    if settings.source != SOURCE:
        return dg.Definitions()
    parts = GraphParts.from_settings(settings)
    drift, drift_checks = build_monitoring(parts)
    scorecard_checks, freshness_sensors = build_scorecard_checks(parts)
    refresh_job, sensors = build_scorecard_automation(parts)
    return dg.Definitions(
        assets=[*build_assets(parts), drift],
        asset_checks=[*scorecard_checks, *drift_checks],
        jobs=[refresh_job],
        sensors=[*sensors, *freshness_sensors],
    )
