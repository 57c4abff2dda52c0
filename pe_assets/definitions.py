"""The pe_assets code location: ``dagster dev -w workspace.yaml`` or ``-m pe_assets.definitions``."""

import dagster as dg

from pe_assets.config import Settings
from pe_assets.defs import assets
from pe_assets.defs.resources import build_resources

settings = Settings.from_env()

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=dg.load_asset_checks_from_modules([assets]),
    resources=build_resources(settings),
)
