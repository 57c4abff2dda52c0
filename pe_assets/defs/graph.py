"""The modules whose assets and asset checks make up the code location's graph (one list, used by
``definitions.py`` and by tests that need the whole graph)."""

from types import ModuleType

import dagster as dg

from pe_assets.defs import assets, checks, monitoring, views

ASSET_MODULES: tuple[ModuleType, ...] = (assets, views, monitoring)


def all_assets() -> list[dg.AssetsDefinition]:
    return [a for a in dg.load_assets_from_modules(list(ASSET_MODULES)) if isinstance(a, dg.AssetsDefinition)]


def all_asset_checks() -> list[dg.AssetChecksDefinition]:
    return [*dg.load_asset_checks_from_modules(list(ASSET_MODULES)), *checks.asset_checks]
