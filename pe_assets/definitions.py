"""The pe_assets code location: ``dagster dev -w workspace.yaml`` or ``-m pe_assets.definitions``.

Small on purpose: each concern lives in its own module under ``pe_assets/defs``; this file only
reads the settings (failing early, naming any bad variable) and merges the pieces.
"""

import dagster as dg

from pe_assets.config import Settings
from pe_assets.defs import automation, checks
from pe_assets.defs.graph import all_asset_checks, all_assets
from pe_assets.defs.jobs import pe_daily_job
from pe_assets.defs.resources import build_resources

settings = Settings.from_env()

defs = dg.Definitions(
    assets=all_assets(),
    asset_checks=all_asset_checks(),
    jobs=[pe_daily_job],
    schedules=automation.schedules,
    sensors=[*automation.sensors, *checks.sensors],
    resources=build_resources(settings),
    # Steps are I/O-bound on one shared API budget and write one warehouse; a process per step
    # cost ~3 s of imports each and bought no speed, so steps run in the run's own process.
    executor=dg.in_process_executor,
)
