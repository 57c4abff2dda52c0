"""The one private Dagster name shipped code uses (``pe_assets/defs/common/dagster_private.py``).

Fails loudly when a Dagster upgrade moves or reshapes it, instead of per-day check results
silently losing the link to their materialization.
"""

import inspect

import dagster as dg

from pe_assets.defs.common import dagster_private


def test_the_private_target_type_still_exists_with_its_fields():
    target = dagster_private.AssetCheckEvaluationTargetMaterializationData
    assert {"storage_id", "run_id", "timestamp"} <= set(target._fields)  # a Dagster record (a NamedTuple)
    assert "target_materialization_data" in inspect.signature(dg.AssetCheckEvaluation).parameters


def test_latest_materialization_target_reads_the_instance():
    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey("fact_journey_step")
    assert dagster_private.latest_materialization_target(instance, key, "2024-03-05") is None
    instance.report_runless_asset_event(dg.AssetMaterialization(key, partition="2024-03-05"))
    target = dagster_private.latest_materialization_target(instance, key, "2024-03-05")
    assert target is not None and target.storage_id > 0
    assert dagster_private.latest_materialization_target(instance, key, "2024-03-06") is None


def test_no_other_shipped_module_imports_dagster_private_names():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "pe_assets"
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "dagster_private.py" and "dagster._" in path.read_text()
    ]
    assert offenders == []
