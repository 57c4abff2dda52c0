"""The code location's definitions: one folder per API source beside ``common/`` (what all share).

Every sub-package exposes ``build_defs(settings) -> dg.Definitions``, and ``build_defs`` here merges
them all: a second source is a new folder, not edits across many files. A source's folder returns
empty definitions unless ``PE_SOURCE`` names it. Nothing here reads the environment: the settings
arrive from ``pe_assets.definitions``, read once when the code location loads.
"""

import importlib
import pkgutil
import warnings

import dagster as dg

from pe_assets.config import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    """Assets, checks, jobs, schedules and sensors of every folder, for ``settings`` (no resources)."""
    folders = [
        importlib.import_module(found.name)
        for found in pkgutil.iter_modules(__path__, prefix=f"{__name__}.")
        if found.ispkg
    ]
    with warnings.catch_warnings():
        # Known and chosen: every asset's ``backfill_policy`` (beta in Dagster 1.13) makes a range of
        # days one run. Only that warning is silenced, and only while the definitions are built.
        warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
        return dg.Definitions.merge(*(folder.build_defs(settings) for folder in folders))
