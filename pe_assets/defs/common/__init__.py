"""What every source shares: resources, the partitions and table helpers, the whole-graph job and
its schedules, the journey facts' cross-table and freshness checks, and the funnel views."""

import dagster as dg

from pe_assets.config import Settings
from pe_assets.defs.common.automation import build_daily_automation
from pe_assets.defs.common.checks import build_shared_checks
from pe_assets.defs.common.tables import GraphParts
from pe_assets.defs.common.views import build_funnel_views


def build_defs(settings: Settings) -> dg.Definitions:
    parts = GraphParts.from_settings(settings)
    daily_job, schedules = build_daily_automation(parts)
    checks, sensors = build_shared_checks(parts.partitions)
    return dg.Definitions(
        assets=[build_funnel_views(parts)],
        asset_checks=checks,
        jobs=[daily_job],
        schedules=schedules,
        sensors=sensors,
    )
