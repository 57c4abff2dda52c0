"""The one place shipped code reaches into Dagster's private modules, and why.

A per-partition ``AssetCheckEvaluation`` should name the materialization it judged, so the UI links
each day's check result to that day's materialization. Dagster 1.13 exports
``AssetCheckEvaluation`` but not the type of its ``target_materialization_data`` field. dagster is
pinned exactly (pyproject), and ``pe_assets_tests/test_dagster_private.py`` fails loudly when an
upgrade moves or changes it.
"""

from collections.abc import Sequence

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

#: Records fetched per query: a ranged run's materializations of a year fit in one page.
_PAGE = 1000


def latest_materialization_targets(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: Sequence[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """Each partition's latest materialization of ``asset_key``, as a check evaluation's target
    (partitions never materialized are absent).

    A few queries for the whole window instead of one per day (a year's check asked 365 times):
    records come newest first, so the first one seen of a partition is its latest; paging stops once
    every partition is found.
    """
    targets: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    wanted = set(partitions)
    records_filter = dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=sorted(wanted))
    cursor: str | None = None
    while len(targets) < len(wanted):
        result = instance.fetch_materializations(records_filter, limit=_PAGE, cursor=cursor)
        for record in result.records:
            if record.partition_key is not None and record.partition_key not in targets:
                targets[record.partition_key] = AssetCheckEvaluationTargetMaterializationData(
                    storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
                )
        if not result.has_more:
            break
        cursor = result.cursor
    return targets
