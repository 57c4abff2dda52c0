"""The landing zone: immutable, atomic, readable back; local folders and fsspec URLs."""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from pe_assets import landing
from pe_assets.landing import LandingError, LandingZone

DAY = date(2024, 3, 5)
T0 = datetime(2024, 3, 6, 1, tzinfo=UTC)


@pytest.fixture(params=["local", "memory"])
def zone(request, tmp_path):
    if request.param == "local":
        return LandingZone(str(tmp_path / "landing"))
    return LandingZone(f"memory://pe-test-{uuid.uuid4().hex}/landing")


def test_write_then_read_back_unchanged(zone):
    pages = [{"steps": [{"stepId": "a", "contactCount": 1, "new": "ünïcödé"}], "nextPageUri": None}]
    zone.write("raw_campaign_journeys", "c1", T0, {"pages": pages}, DAY)
    [landed] = zone.files("raw_campaign_journeys", DAY)
    assert landed.envelope["pages"] == pages
    assert (landed.source_id, landed.day, landed.extracted_at) == ("c1", DAY, T0)


def test_every_extraction_is_kept_and_latest_wins(zone):
    for n in range(3):
        zone.write("raw_scorecards", "s1", T0 + timedelta(hours=n), {"response": {"n": n}}, DAY)
    zone.write("raw_scorecards", "s2", T0, {"response": {"n": 9}}, DAY)
    assert [f.envelope["response"]["n"] for f in zone.files("raw_scorecards", DAY) if f.source_id == "s1"] == [0, 1, 2]
    latest = zone.latest_per_source("raw_scorecards", DAY)
    assert {k: v.envelope["response"]["n"] for k, v in latest.items()} == {"s1": 2, "s2": 9}


def land_in_the_earlier_layout(zone: LandingZone, dataset: str, source_id: str, extracted_at: datetime, n: int) -> str:
    """A file as zones wrote them before days were one folder: ``day=.../{source_id}/{name}``."""
    envelope = {
        "envelope_version": 1,
        "dataset": dataset,
        "day": DAY.isoformat(),
        "source_id": source_id,
        "extracted_at": extracted_at.isoformat(),
        "response": {"n": n},
    }
    path = zone.root / dataset / f"day={DAY}" / source_id / f"{extracted_at:%Y%m%dT%H%M%S%fZ}-0000000{n}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(envelope).encode())
    return str(path)


def check_both_layouts_are_read_in_extraction_order(zone: LandingZone) -> None:
    """Files of the earlier layout are read beside new ones, each source's in extraction order."""
    land_in_the_earlier_layout(zone, "raw_scorecards", "s1", T0, 0)
    zone.write("raw_scorecards", "s1", T0 + timedelta(hours=1), {"response": {"n": 1}}, DAY)
    land_in_the_earlier_layout(zone, "raw_scorecards", "s1", T0 + timedelta(hours=2), 2)
    zone.write("raw_scorecards", "s0", T0, {"response": {"n": 7}}, DAY)
    land_in_the_earlier_layout(zone, "raw_scorecards", "s2", T0, 9)
    landed = [(f.source_id, f.envelope["response"]["n"]) for f in zone.files("raw_scorecards", DAY)]
    assert sorted(landed, key=lambda pair: pair[1]) == [("s1", 0), ("s1", 1), ("s1", 2), ("s0", 7), ("s2", 9)]
    paths = zone.day_paths("raw_scorecards", DAY)
    assert [zone.read_files("raw_scorecards", [p])[0].envelope["response"]["n"] for p in paths] == [7, 0, 1, 2, 9]
    latest = zone.latest_per_source("raw_scorecards", DAY)
    assert {k: v.envelope["response"]["n"] for k, v in latest.items()} == {"s0": 7, "s1": 2, "s2": 9}


def test_a_day_is_one_folder_and_the_earlier_layout_is_still_read(zone):
    path = zone.write("raw_scorecards", "s1", T0, {"response": {"n": 1}}, DAY)
    assert path.endswith(f"/raw_scorecards/day={DAY}/s1~20240306T010000000000Z-{path[-13:-5]}.json")
    zone.root.joinpath("raw_scorecards", f"day={DAY}", "s1").mkdir(parents=True, exist_ok=True)  # an empty old folder
    assert [f.path.rsplit("/", 1)[1] for f in zone.files("raw_scorecards", DAY)] == [path.rsplit("/", 1)[1]]


def test_files_of_the_earlier_layout_are_read_beside_new_ones(zone):
    check_both_layouts_are_read_in_extraction_order(zone)


def test_same_instant_twice_makes_two_files(zone):
    zone.write("campaign_listing", "all", T0, {"pages": [1]})
    zone.write("campaign_listing", "all", T0, {"pages": [2]})
    assert len(zone.files("campaign_listing")) == 2


def test_unknown_dataset_or_day_reads_empty(zone):
    assert zone.files("nothing_here", DAY) == []
    assert zone.latest_per_source("raw_campaign_journeys", DAY) == {}


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "x y"])
def test_ids_that_could_escape_the_tree_are_refused(zone, bad):
    with pytest.raises(LandingError):
        zone.write("raw_campaign_journeys", bad, T0, {"pages": []}, DAY)


def test_nan_is_refused_not_written(zone):
    with pytest.raises(ValueError):
        zone.write("raw_scorecards", "s1", T0, {"response": {"x": float("nan")}}, DAY)
    assert zone.files("raw_scorecards", DAY) == []


def test_naive_time_is_refused(zone):
    with pytest.raises(LandingError, match="timezone"):
        zone.write("raw_scorecards", "s1", T0.replace(tzinfo=None), {"response": {}}, DAY)


def test_half_written_temporary_files_are_invisible(tmp_path):
    zone = LandingZone(str(tmp_path))
    zone.write("raw_scorecards", "s1", T0, {"response": {}}, DAY)
    folder = tmp_path / "raw_scorecards" / f"day={DAY}"
    (folder / ".s1~20240306T010000000000Z-dead.json.tmp").write_bytes(b'{"truncated": ')
    assert len(zone.files("raw_scorecards", DAY)) == 1


def test_damaged_file_is_reported_by_path(tmp_path):
    zone = LandingZone(str(tmp_path))
    path = zone.write("raw_scorecards", "s1", T0, {"response": {}}, DAY)
    os.chmod(path, 0o644)
    with open(path, "w") as handle:
        handle.write("{not json")
    with pytest.raises(LandingError, match="damaged"):
        zone.files("raw_scorecards", DAY)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_local_reads_beyond_the_prefetch_window_keep_order_and_close_every_file(tmp_path, monkeypatch):
    # Files are opened (and announced to the kernel) a window ahead of the one being read.
    monkeypatch.setattr(landing, "_PREFETCH_WINDOW", 3)
    zone = LandingZone(str(tmp_path))
    paths = [zone.write("raw_scorecards", f"s{n:02d}", T0, {"response": {"n": n}}, DAY) for n in range(10)]
    before = _open_descriptors()
    assert [f.envelope["response"]["n"] for f in zone.read_files("raw_scorecards", paths)] == list(range(10))
    assert _open_descriptors() == before


def test_a_missing_local_file_is_named_and_no_descriptor_is_left_open(tmp_path, monkeypatch):
    monkeypatch.setattr(landing, "_PREFETCH_WINDOW", 3)
    zone = LandingZone(str(tmp_path))
    paths = [zone.write("raw_scorecards", f"s{n:02d}", T0, {"response": {}}, DAY) for n in range(6)]
    os.remove(paths[4])
    before = _open_descriptors()
    with pytest.raises(LandingError, match=re.escape(f"landing file {paths[4]} is missing")):
        zone.read_texts(paths)
    assert _open_descriptors() == before
