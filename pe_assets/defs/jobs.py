"""Jobs: the whole graph for a day or a range of days."""

import dagster as dg

from pe_assets.defs.partitions import daily_partitions

# Every asset: extraction, landing, facts and dims. A range of days runs as one run (the assets'
# BackfillPolicy.single_run), so a year-long backfill is a handful of runs, not 365.
pe_daily_job = dg.define_asset_job(
    "pe_daily_job",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="Extract, land and load every campaign's journey funnel and every scorecard's performance.",
)
