"""The one place shipped code reaches into Dagster's private modules, and why.

A per-partition ``AssetCheckEvaluation`` should name the materialization it judged, so the UI links
each day's check result to that day's materialization. Dagster 1.13 exports
``AssetCheckEvaluation`` but not the type of its ``target_materialization_data`` field. dagster is
pinned exactly (pyproject), and ``pe_assets_tests/test_dagster_private.py`` fails loudly when an
upgrade moves or changes it.
"""

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)


def latest_materialization_target(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The latest materialization of ``asset_key``'s ``partition``, as a check evaluation's target."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.event_log_entry.run_id, timestamp=record.timestamp
    )
