"""The landing zone on S3 (PE_LANDING_URL=s3://bucket/prefix) keeps the local folder's promises.

Against a real S3 API server on loopback (moto's server, see pe_dev.s3), reached through the
standard AWS environment exactly as in production: botocore's wire protocol, no patched client.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import botocore.exceptions
import duckdb
import pytest

from pe_assets import landing
from pe_assets.landing import LandingError, LandingZone
from pe_assets.schemas import TABLES
from pe_assets_tests.test_landing import check_both_layouts_are_read_in_extraction_order
from pe_dev.pipeline import pipeline_resources, run_days
from pe_dev.s3 import MotoS3Server

DAY = date(2024, 3, 5)
T0 = datetime(2024, 3, 6, 1, tzinfo=UTC)
BUCKET = "pe-landing"


@pytest.fixture
def s3(monkeypatch) -> Iterator[MotoS3Server]:
    """moto's S3 server on a free loopback port, the AWS variables set for this test only."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    with MotoS3Server() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def zone(s3) -> LandingZone:
    return LandingZone(f"s3://{BUCKET}/prefix-{uuid.uuid4().hex[:8]}/landing")


def _key(path: str) -> str:
    """The object key of a path ``write`` returned (``s3://bucket/key`` or ``bucket/key``)."""
    return path.removeprefix("s3://").split("/", 1)[1]


def test_the_server_refuses_a_conditional_overwrite(s3):
    # The guard below rests on this: if the server ignored If-None-Match, the tests would be vacuous.
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="probe", Body=b"1", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        client.put_object(Bucket=BUCKET, Key="probe", Body=b"2", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    assert client.get_object(Bucket=BUCKET, Key="probe")["Body"].read() == b"1"


def test_write_then_read_back_unchanged(zone, s3):
    pages = [{"steps": [{"stepId": "a", "contactCount": 1, "new": "ünïcödé"}], "nextPageUri": None}]
    path = zone.write("raw_campaign_journeys", "c1", T0, {"pages": pages}, DAY)
    assert path.startswith(f"s3://{BUCKET}/") and f"/raw_campaign_journeys/day={DAY}/c1~" in path
    [landed] = zone.files("raw_campaign_journeys", DAY)
    assert landed.envelope["pages"] == pages and landed.path == path
    assert (landed.source_id, landed.day, landed.extracted_at) == ("c1", DAY, T0)
    # The object is the JSON envelope, byte for byte what a reader gets.
    body = s3.client().get_object(Bucket=BUCKET, Key=_key(path))["Body"].read()
    assert b'"new":"\xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9"' in body


def test_files_latest_per_source_and_the_day_pointer_read(zone):
    for n in range(3):
        zone.write("raw_scorecards", "s1", T0 + timedelta(hours=n), {"response": {"n": n}}, DAY)
    zone.write("raw_scorecards", "s2", T0, {"response": {"n": 9}}, DAY)
    assert [f.envelope["response"]["n"] for f in zone.files("raw_scorecards", DAY) if f.source_id == "s1"] == [0, 1, 2]
    latest = zone.latest_per_source("raw_scorecards", DAY)
    assert {k: v.envelope["response"]["n"] for k, v in latest.items()} == {"s1": 2, "s2": 9}
    assert zone.files("nothing_here", DAY) == [] and zone.latest_per_source("raw_scorecards", date(2024, 1, 1)) == {}

    # A many-day answer lands once without a day; a day's pointer names it and read opens it.
    answer = zone.write("raw_aggregates", "all", T0, {"response": {"days": 31}})
    name = answer.rsplit("/", 1)[1]
    assert zone.read("raw_aggregates", name).envelope["response"] == {"days": 31}
    assert [f.path for f in zone.files("raw_aggregates")] == [answer]
    with pytest.raises(LandingError, match="missing"):
        zone.read("raw_aggregates", "20240306T010000000000Z-00000000.json")


def test_files_of_the_earlier_layout_are_read_beside_new_ones(zone):
    check_both_layouts_are_read_in_extraction_order(zone)


def test_another_writer_is_seen_at_once(zone, s3):
    # A run pod on another host lands a file: no cached listing may hide it from this process.
    assert zone.files("raw_scorecards", DAY) == []
    other = LandingZone(str(zone.root))
    path = other.write("raw_scorecards", "s1", T0, {"response": {}}, DAY)
    s3.client().put_object(  # and one written by another client altogether
        Bucket=BUCKET,
        Key=_key(path).replace("/s1~", "/s2~"),
        Body=b'{"day":"2024-03-05","source_id":"s2","extracted_at":"2024-03-06T01:00:00+00:00"}',
    )
    assert sorted(zone.latest_per_source("raw_scorecards", DAY)) == ["s1", "s2"]


def test_the_same_name_twice_is_refused_and_the_first_kept(zone, s3, monkeypatch):
    monkeypatch.setattr(landing.secrets, "token_hex", lambda n: "0" * (2 * n))
    first = zone.write("raw_scorecards", "s1", T0, {"response": {"n": 1}}, DAY)
    with pytest.raises(LandingError, match="refusing to overwrite"):
        zone.write("raw_scorecards", "s1", T0, {"response": {"n": 2}}, DAY)
    [kept] = zone.files("raw_scorecards", DAY)
    assert kept.path == first and kept.envelope["response"] == {"n": 1}


def test_two_concurrent_writers_of_one_key_exactly_one_wins(zone, monkeypatch):
    # Same instant, same nonce: one key. Both PUTs are in flight together; the store must pick one.
    monkeypatch.setattr(landing.secrets, "token_hex", lambda n: "0" * (2 * n))
    writers = 8
    start = threading.Barrier(writers)
    outcomes: list[str] = []

    def write(n: int) -> None:
        start.wait()
        try:
            zone.write("raw_scorecards", "s1", T0, {"response": {"writer": n}}, DAY)
            outcomes.append(f"won:{n}")
        except LandingError:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [o for o in outcomes if o.startswith("won:")]
    assert len(outcomes) == writers and len(winners) == 1, outcomes
    [kept] = zone.files("raw_scorecards", DAY)
    assert f"won:{kept.envelope['response']['writer']}" == winners[0]


def test_a_damaged_object_is_reported_by_name(zone, s3):
    path = zone.write("raw_scorecards", "s1", T0, {"response": {}}, DAY)
    s3.client().put_object(Bucket=BUCKET, Key=_key(path), Body=b"{not json")  # behind the zone's back
    with pytest.raises(LandingError, match="damaged") as damaged:
        zone.files("raw_scorecards", DAY)
    assert _key(path) in str(damaged.value)


def test_a_missing_bucket_fails_the_write_naming_it(s3):
    zone = LandingZone("s3://pe-no-such-bucket/landing")
    with pytest.raises(LandingError, match="pe-no-such-bucket"):
        zone.write("raw_scorecards", "s1", T0, {"response": {}}, DAY)


# --- One pipeline day with the landing zone on S3 equals the same day on a local folder ---------

PIPELINE_DAY = date(2024, 3, 5)
NOW = datetime(2024, 3, 20, 12, tzinfo=UTC)  # long after the day: outcomes are final


def _tables(warehouse: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without the columns that record *when* a run read or loaded
    (``*_at``, ``load_timestamp``): those differ between any two runs; everything else must not."""
    out: dict[str, list[tuple]] = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        present = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in sorted(set(TABLES) & present):
            columns = [
                row[0]
                for row in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
                if not row[0].endswith("_at") and row[0] != "load_timestamp"
            ]
            rows = con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
    return out


def test_one_pipeline_day_on_s3_equals_the_same_day_on_a_local_folder(s3, make_simulator, tmp_path):
    runs = {}
    for where in ("local", "s3"):
        sim = make_simulator(seed=7, client_limit=100_000, org_limit=100_000)
        sim.set_now(NOW)
        data_dir = tmp_path / where
        landing_url = f"s3://{BUCKET}/pipeline/landing" if where == "s3" else None
        resources = pipeline_resources(sim, data_dir, now=NOW, landing_url=landing_url)
        result = run_days(resources, PIPELINE_DAY, PIPELINE_DAY)
        assert result.success, where
        runs[where] = _tables(data_dir / "warehouse.duckdb")

    assert not (tmp_path / "s3" / "landing").exists(), "the S3 run landed files on the local disk"
    keys = [
        obj["Key"]
        for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="pipeline/landing/")
        for obj in page.get("Contents", [])
    ]
    assert any(f"/day={PIPELINE_DAY}/" in key for key in keys), keys[:5]
    local, remote = runs["local"], runs["s3"]
    assert local.keys() == remote.keys() and local.get("fact_predictive_journey"), sorted(local)
    for table in local:
        assert remote[table] == local[table], table
