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


def test_latest_materialization_targets_reads_each_partitions_newest(monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey("fact_journey_step")
    days = ["2024-03-05", "2024-03-06", "2024-03-07"]
    assert dagster_private.latest_materialization_targets(instance, key, days) == {}
    for partition in ["2024-03-05", "2024-03-07", "2024-03-05", "2024-03-04"]:
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))
    storage_ids = {
        record.partition_key: record.storage_id  # oldest first: the last one seen is the newest
        for record in instance.fetch_materializations(key, limit=10, ascending=True).records
    }
    targets = dagster_private.latest_materialization_targets(instance, key, days)
    assert {day: target.storage_id for day, target in targets.items()} == {
        "2024-03-05": storage_ids["2024-03-05"],
        "2024-03-07": storage_ids["2024-03-07"],
    }
    # More materializations than one page: still each partition's newest.
    for _ in range(3):
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition="2024-03-06"))
    newest = instance.fetch_materializations(key, limit=1).records[0].storage_id
    monkeypatch.setattr(dagster_private, "_PAGE", 2)
    paged = dagster_private.latest_materialization_targets(instance, key, days)
    assert paged["2024-03-06"].storage_id == newest
    assert paged["2024-03-05"] == targets["2024-03-05"]


def test_no_other_shipped_module_imports_dagster_private_names():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "pe_assets"
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "dagster_private.py" and "dagster._" in path.read_text()
    ]
    assert offenders == []
