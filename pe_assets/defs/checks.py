"""Asset checks that look across tables or at time: referential integrity, completeness, freshness.

Each table's own Pandera model runs inside the asset that writes it (see ``assets.py``), so a bad
frame is never written; the checks here run over what was written.
"""

import dagster as dg

asset_checks: list[dg.AssetChecksDefinition] = []
