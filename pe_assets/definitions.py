"""The pe_assets code location: ``dg dev``, ``dagster dev -w workspace.yaml`` or ``-m pe_assets.definitions``.

Small on purpose: the settings are read once, when the code location loads (failing early, naming
any bad variable); the graph comes from the ``pe_assets.defs`` folders, the resources from the
settings. Importing this module reads nothing: Dagster calls ``defs`` when it loads the location.
"""

import dagster as dg

from pe_assets.config import Settings
from pe_assets.defs import build_defs
from pe_assets.defs.common.resources import build_resources


def code_location(settings: Settings | None = None) -> dg.Definitions:
    """The whole code location for ``settings`` (default: read from the environment, now)."""
    settings = settings or Settings.from_env()
    return dg.Definitions.merge(
        build_defs(settings),
        dg.Definitions(
            resources=build_resources(settings),
            # Steps are I/O-bound on one shared API budget and write one warehouse; a process per step
            # cost ~3 s of imports each and bought no speed, so steps run in the run's own process.
            executor=dg.in_process_executor,
            metadata={"pe_assets/source": settings.source, "pe_assets/warehouse": settings.warehouse},
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return code_location()
