"""Tests of the simulator's real Genesys journey-aggregate endpoints over real loopback sockets.

Answers are validated against ``pe_assets/contract/genesys-journey-aggregates.openapi.yaml`` with
openapi-core and compared with the simulator's truth accessors. Job delays and expiry run on the
simulator's frozen clock (``sim.advance``), never on sleeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.validation.response.exceptions import InvalidData
from werkzeug.datastructures import Headers, ImmutableMultiDict

from pe_dev.simulator import (
    ACTION_MAP_PERMISSION,
    AGGREGATE_PERMISSION,
    FUNNEL_METRICS,
    ClientSpec,
    SimulatorConfig,
    SimulatorServer,
    default_clients,
)
from pe_dev.simulator.__main__ import build_parser, config_from_args

CONTRACT = Path(__file__).resolve().parents[1] / "pe_assets" / "contract" / "genesys-journey-aggregates.openapi.yaml"
MAPS = "/api/v2/journey/actionmaps"
QUERY = "/api/v2/analytics/journeys/aggregates/query"
JOBS = "/api/v2/analytics/journeys/aggregates/jobs"
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
DAYS = [date(2024, 1, 15), date(2024, 1, 16), date(2024, 1, 17)]
THREE_DAYS = "2024-01-15T00:00:00.000Z/2024-01-18T00:00:00.000Z"
ININ = ("inin-ratelimit-count", "inin-ratelimit-allowed", "inin-ratelimit-reset")


# ------------------------------------------------------------------ contract validation
class _Request:
    """openapi-core Request protocol over an httpx request (host mapped to the spec's server)."""

    def __init__(self, request: httpx.Request) -> None:
        self.host_url = "https://api.mypurecloud.com"
        self.path = request.url.path
        self.method = request.method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
        )
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "").lower()


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.headers = Headers(list(response.headers.items()))
        self.content_type = response.headers.get("content-type", "").lower()
        self.data = response.content


@pytest.fixture(scope="module")
def contract() -> OpenAPI:
    return OpenAPI.from_file_path(str(CONTRACT))


def check(contract: OpenAPI, response: httpx.Response, status: int) -> Any:
    """Assert the status, validate the answer against the contract, return the JSON (or None)."""
    assert response.status_code == status, response.text
    contract.validate_response(_Request(response.request), _Response(response))
    assert response.headers["ININ-Correlation-Id"]
    return response.json() if response.content else None


class JApi:
    """A tiny test client of the journey endpoints."""

    def __init__(self, sim: SimulatorServer, client_id: str | None = None, secret: str | None = None) -> None:
        self.sim = sim
        self.http = httpx.Client(base_url=sim.api_url, timeout=10)
        client_id, secret = client_id or sim.client_id, secret or sim.client_secret
        response = self.http.post(
            f"{sim.login_url}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert response.status_code == 200, response.text
        self.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}

    def get(self, url: str, **params: Any) -> httpx.Response:
        return self.http.get(url, params=params or None, headers=self.headers)

    def post(self, url: str, body: Any) -> httpx.Response:
        return self.http.post(url, json=body, headers=self.headers)

    def query(self, **body: Any) -> httpx.Response:
        return self.post(QUERY, funnel_body(**body))

    def submit(self, **body: Any) -> httpx.Response:
        return self.post(JOBS, funnel_body(**body))

    def job(self, job_id: str) -> httpx.Response:
        return self.get(f"{JOBS}/{job_id}")

    def results(self, job_id: str, cursor: str | None = None) -> httpx.Response:
        return self.get(f"{JOBS}/{job_id}/results", **({"cursor": cursor} if cursor else {}))

    def delete(self, job_id: str) -> httpx.Response:
        return self.http.delete(f"{JOBS}/{job_id}", headers=self.headers)

    def close(self) -> None:
        self.http.close()


def funnel_body(**overrides: Any) -> dict[str, Any]:
    """The per-partition funnel query of JOURNEY_AGGREGATES.md 6.6, with overrides (None drops a key)."""
    body: dict[str, Any] = {
        "interval": THREE_DAYS,
        "granularity": "P1D",
        "timeZone": "UTC",
        "groupBy": ["journeyActionMapId"],
        "metrics": list(FUNNEL_METRICS),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def cells(body: dict[str, Any]) -> dict[tuple[str, str], dict[str, int]]:
    """{(map id, bucket start date), {metric: count}} of an aggregate answer."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for container in body.get("results", []):
        for bucket in container["data"]:
            key = (container["group"]["journeyActionMapId"], bucket["interval"][:10])
            assert key not in out
            out[key] = {m["metric"]: m["stats"]["count"] for m in bucket["metrics"]}
    return out


def truth(sim: SimulatorServer, days: list[date], metrics: tuple[str, ...] = FUNNEL_METRICS) -> dict:
    """What ``cells`` of a P1D UTC funnel query over ``days`` must be, from the truth accessors."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for action_map in sim.action_maps():
        for day in days:
            funnel = sim.expected_action_map_funnel(action_map["id"], day)
            if funnel is not None:
                present = {k: v for k, v in funnel.items() if v and k in metrics}
                if present:
                    out[(action_map["id"], day.isoformat())] = present
    return out


@pytest.fixture
def sim(make_simulator) -> SimulatorServer:
    """A frozen-clock simulator without the off-enum legacy map (so every listing validates)."""
    return make_simulator(frozen_now=NOW, legacy_media_type=None)


@pytest.fixture
def api(sim: SimulatorServer):
    client = JApi(sim)
    yield client
    client.close()


# ====================================================================== action maps
def test_action_map_listing_pages_by_number_to_the_truth(sim: SimulatorServer, api: JApi, contract: OpenAPI) -> None:
    first = check(contract, api.get(MAPS, pageSize=5), 200)
    assert (first["total"], first["pageCount"], first["pageNumber"], first["pageSize"]) == (12, 3, 1, 5)
    assert "previousUri" not in first
    assert first["firstUri"] == first["selfUri"] == f"{MAPS}?pageSize=5&pageNumber=1"
    assert first["lastUri"] == f"{MAPS}?pageSize=5&pageNumber=3"
    items, page = list(first["entities"]), first
    while "nextUri" in page:
        assert page["nextUri"].startswith(f"{MAPS}?"), "nextUri is relative to the API host"
        page = check(contract, api.get(page["nextUri"]), 200)
        items += page["entities"]
    assert page["pageNumber"] == 3 and page["previousUri"] == f"{MAPS}?pageSize=5&pageNumber=2"
    assert items == sim.action_maps()
    assert len({m["id"] for m in items}) == 12
    default = check(contract, api.get(MAPS), 200)
    assert default["pageSize"] == 25 and "nextUri" not in default and len(default["entities"]) == 12
    beyond = check(contract, api.get(MAPS, pageSize=5, pageNumber=9), 200)
    assert beyond["entities"] == [] and beyond["total"] == 12
    # page numbers are stable: asking again gives the same page
    assert api.get(MAPS, pageSize=5, pageNumber=2).json() == api.get(MAPS, pageSize=5, pageNumber=2).json()


@pytest.mark.parametrize(
    "params",
    [
        {"pageSize": 101},
        {"pageSize": 0},
        {"pageNumber": 0},
        {"pageSize": "x"},
        {"filterField": "weight"},
        {"filterValue": "2"},
        {"queryValue": "cart"},
        {"filterField": "nope", "filterValue": "1"},
        {"sortBy": "colour"},
        {"actionMapIds": "a", "pageSize": 5},
    ],
)
def test_action_map_listing_bad_params_are_400(api: JApi, contract: OpenAPI, params: dict[str, Any]) -> None:
    assert check(contract, api.get(MAPS, **params), 400)["code"] == "bad.request"


def test_action_map_listing_filter_sort_query_and_ids(sim: SimulatorServer, api: JApi, contract: OpenAPI) -> None:
    maps = sim.action_maps()
    heavy = check(contract, api.get(MAPS, filterField="weight", filterValue="3"), 200)["entities"]
    assert heavy == [m for m in maps if m["weight"] == 3]
    inactive = check(contract, api.get(MAPS, filterField="isActive", filterValue="false"), 200)["entities"]
    assert sim.action_map_roles["inactive"] in {m["id"] for m in inactive}
    by_name = check(contract, api.get(MAPS, sortBy="displayName", pageSize=100), 200)["entities"]
    assert [m["displayName"] for m in by_name] == sorted(m["displayName"] for m in maps)
    newest = check(contract, api.get(MAPS, sortBy="-createdDate", pageSize=3), 200)
    assert [m["createdDate"] for m in newest["entities"]] == sorted((m["createdDate"] for m in maps), reverse=True)[:3]
    assert "sortBy=-createdDate" in newest["nextUri"]
    needle = maps[0]["displayName"].split()[0].lower()
    found = check(contract, api.get(MAPS, queryFields="displayName", queryValue=needle), 200)["entities"]
    assert maps[0] in found and all(needle in m["displayName"].lower() for m in found)
    ids = [maps[3]["id"], maps[1]["id"], "00000000-0000-4000-8000-000000000000"]
    picked = api.http.get(MAPS, params=[("actionMapIds", i) for i in ids], headers=api.headers)
    assert {m["id"] for m in check(contract, picked, 200)["entities"]} == {maps[1]["id"], maps[3]["id"]}
    comma = check(contract, api.get(MAPS, actionMapIds=",".join(ids[:2])), 200)
    assert comma["total"] == 2 and comma["pageCount"] == 1
    too_many = api.get(MAPS, actionMapIds=",".join(f"id-{i}" for i in range(101)))
    assert check(contract, too_many, 400)["code"] == "bad.request"


def test_world_shape_roles_and_dates(make_simulator) -> None:
    sim = make_simulator(frozen_now=NOW, n_deleted_action_maps=2)
    maps = {m["id"]: m for m in sim.action_maps()}
    roles = sim.action_map_roles
    assert set(roles) == {"inactive", "content_offer", "architect_flow", "legacy", "sparse"}
    assert maps[roles["legacy"]]["action"]["mediaType"] == "webchat"  # old maps keep the dropped enum value
    assert maps[roles["content_offer"]]["action"]["mediaType"] == "contentOffer"
    assert maps[roles["architect_flow"]]["action"]["mediaType"] == "architectFlow"
    assert not maps[roles["inactive"]]["isActive"]
    assert sum(m["isActive"] for m in maps.values()) >= len(maps) // 2
    for m in maps.values():
        assert m["createdDate"] <= m["modifiedDate"] and m["createdDate"].endswith("Z")
        assert m["selfUri"] == f"{MAPS}/{m['id']}" and m["activation"]["type"]
    # an inactive map has data until it was deactivated, none afterwards
    stopped = datetime.fromisoformat(maps[roles["inactive"]]["modifiedDate"].replace("Z", "+00:00")).date()
    assert sim.expected_action_map_funnel(roles["inactive"], stopped + timedelta(days=1)) is None
    before = [stopped - timedelta(days=d) for d in range(1, 15)]
    assert any(sim.expected_action_map_funnel(roles["inactive"], d) for d in before)
    # deleted maps: in aggregates, not in the listing
    deleted = sim.deleted_action_map_ids()
    assert len(deleted) == 2 and not set(deleted) & set(maps)
    api = JApi(sim)
    got = cells(api.query().json())
    assert {map_id for map_id, _ in got} & set(deleted)
    api.close()


# ====================================================================== sync query
def test_sync_query_matches_the_truth(sim: SimulatorServer, api: JApi, contract: OpenAPI) -> None:
    response = api.query()
    for name in ININ:
        int(response.headers[name])
    assert not any(h.lower().startswith("x-ratelimit") for h in response.headers)
    body = check(contract, response, 200)
    assert set(body) == {"results"}
    for container in body["results"]:
        assert set(container) == {"group", "data"} and set(container["group"]) == {"journeyActionMapId"}
        for bucket in container["data"]:
            start, end = bucket["interval"].split("/")
            assert start.endswith(".000Z") and end.endswith(".000Z")
            assert datetime.fromisoformat(end) - datetime.fromisoformat(start) == timedelta(days=1)
            for metric in bucket["metrics"]:
                assert set(metric) == {"metric", "stats"} and set(metric["stats"]) == {"count"}
                assert isinstance(metric["stats"]["count"], int) and metric["stats"]["count"] > 0
    assert cells(body) == truth(sim, DAYS)
    assert sim.count_requests(QUERY, "POST") == 1


def test_sparse_answers(sim: SimulatorServer, api: JApi, contract: OpenAPI) -> None:
    roles = sim.action_map_roles
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(31)]
    got = cells(check(contract, api.query(interval="2024-01-01T00:00:00Z/2024-02-01T00:00:00Z"), 200))
    assert got == truth(sim, days)
    # the sparse map has days without any group/bucket ...
    silent = [d for d in days if sim.expected_action_map_funnel(roles["sparse"], d) is None]
    assert silent and all((roles["sparse"], d.isoformat()) not in got for d in silent)
    # ... and present buckets omit zero metrics (content offers never start a chat)
    content = [v for (map_id, _), v in got.items() if map_id == roles["content_offer"]]
    assert content and all("nWebActionsStarted" not in v and "nWebActionsEngaged" not in v for v in content)
    flows = [v for (map_id, _), v in got.items() if map_id == roles["architect_flow"]]
    assert flows and all("nWebActionsOffered" not in v for v in flows)
    # the funnel is not strictly nested: some day has a count above its qualified count
    assert any(max(v.values()) > v.get("nWebActionsQualified", 0) for v in got.values())
    # nothing at all matches: {}
    assert check(contract, api.query(interval="2022-01-01T00:00:00Z/2022-01-02T00:00:00Z"), 200) == {}
    only_outcomes = api.query(metrics=["nJourneyOutcomesAchieved"])
    assert check(contract, only_outcomes, 200) == {}
    one = {"type": "or", "predicates": [{"dimension": "journeyActionMapId", "value": roles["content_offer"]}]}
    filtered = cells(check(contract, api.query(filter=one), 200))
    assert filtered == {
        k: v for k, v in got.items() if k[0] == roles["content_offer"] and "2024-01-15" <= k[1] < "2024-01-18"
    }


def test_result_and_metric_order_is_shuffled(api: JApi) -> None:
    answers = [api.query().json() for _ in range(3)]
    assert cells(answers[0]) == cells(answers[1]) == cells(answers[2])
    group_orders = {tuple(c["group"]["journeyActionMapId"] for c in a["results"]) for a in answers}
    assert len(group_orders) > 1
    metric_orders = [[m["metric"] for m in b["metrics"]] for c in answers[0]["results"] for b in c["data"]]
    canonical = [[m for m in FUNNEL_METRICS if m in order] for order in metric_orders]
    assert metric_orders != canonical and any(o != sorted(o) for o in metric_orders)


def test_group_by_media_type_and_no_group_by_add_up(sim: SimulatorServer, api: JApi, contract: OpenAPI) -> None:
    by_map = cells(api.query().json())
    total = Counter()
    for counts in by_map.values():
        total.update(counts)
    whole = check(contract, api.query(granularity=None, groupBy=None), 200)
    assert len(whole["results"]) == 1 and whole["results"][0]["group"] == {}
    (bucket,) = whole["results"][0]["data"]
    assert bucket["interval"] == THREE_DAYS
    assert {m["metric"]: m["stats"]["count"] for m in bucket["metrics"]} == dict(total)
    media = check(contract, api.query(groupBy=["journeyActionMediaType"], granularity=None), 200)
    assert {c["group"]["journeyActionMediaType"] for c in media["results"]} >= {"contentOffer", "architectFlow"}


def test_time_zone_and_sub_day_buckets_are_exact_sums(sim: SimulatorServer, api: JApi, contract: OpenAPI) -> None:
    map_id = sim.action_map_roles["content_offer"]
    flt = {"type": "and", "predicates": [{"dimension": "journeyActionMapId", "value": map_id}]}
    halves = check(
        contract, api.query(interval="2024-01-16T00:00:00Z/2024-01-17T00:00:00Z", granularity="PT12H", filter=flt), 200
    )
    (container,) = halves["results"]
    assert [b["interval"] for b in container["data"]] == [
        "2024-01-16T00:00:00.000Z/2024-01-16T12:00:00.000Z",
        "2024-01-16T12:00:00.000Z/2024-01-17T00:00:00.000Z",
    ]
    summed = Counter()
    for bucket in container["data"]:
        summed.update({m["metric"]: m["stats"]["count"] for m in bucket["metrics"]})
    funnel = sim.expected_action_map_funnel(map_id, date(2024, 1, 16))
    assert dict(summed) == {k: v for k, v in funnel.items() if v}
    # Berlin days: buckets start at local midnight (23:00Z in winter); reported in UTC
    berlin = api.query(interval="2024-01-15T00:00:00+01:00/2024-01-18T00:00:00+01:00", timeZone="Europe/Berlin")
    intervals = sorted({b["interval"] for c in check(contract, berlin, 200)["results"] for b in c["data"]})
    assert intervals[0] == "2024-01-14T23:00:00.000Z/2024-01-15T23:00:00.000Z"
    # a DST day in Berlin is 23 hours long
    dst = api.query(interval="2024-03-30T00:00:00+01:00/2024-04-01T00:00:00+02:00", timeZone="Europe/Berlin")
    spring = sorted({b["interval"] for c in dst.json().get("results", []) for b in c["data"]})
    assert spring == []  # the frozen clock (2024-03-01) has no data for those days yet
    sim.set_now(datetime(2024, 4, 2, tzinfo=UTC))
    dst = api.query(interval="2024-03-30T00:00:00+01:00/2024-04-01T00:00:00+02:00", timeZone="Europe/Berlin")
    spring = sorted({b["interval"] for c in check(contract, dst, 200)["results"] for b in c["data"]})
    assert spring == [
        "2024-03-29T23:00:00.000Z/2024-03-30T23:00:00.000Z",
        "2024-03-30T23:00:00.000Z/2024-03-31T22:00:00.000Z",
    ]


def test_hours_not_yet_over_have_no_data(make_simulator) -> None:
    sim = make_simulator(frozen_now=datetime(2024, 1, 16, 6, 0, tzinfo=UTC))
    api = JApi(sim)
    body = funnel_body(interval="2024-01-16T00:00:00Z/2024-01-17T00:00:00Z")
    early = cells(api.post(QUERY, body).json())
    sim.advance(timedelta(days=1))
    final = cells(api.post(QUERY, body).json())
    assert final == truth(sim, [date(2024, 1, 16)])
    assert early and sum(sum(v.values()) for v in early.values()) < sum(sum(v.values()) for v in final.values())
    for key, counts in early.items():
        assert all(counts[m] <= final[key][m] for m in counts)
    api.close()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"interval": None}, "interval"),
        ({"metrics": None}, "metrics"),
        ({"metrics": []}, "metrics"),
        ({"metrics": ["nWebActionsQualified", "nOffered"]}, "metrics[1] is not a valid metric"),
        ({"interval": "2024-01-15/2024-01-16"}, "interval"),
        ({"interval": "2024-01-16T00:00:00Z/2024-01-15T00:00:00Z"}, "after"),
        ({"granularity": "1 day"}, "granularity"),
        ({"granularity": "P0D"}, "granularity"),
        ({"granularity": "P7D"}, "longer than the interval"),
        ({"timeZone": "Mars/Olympus"}, "timeZone"),
        ({"groupBy": ["journeyColour"]}, "groupBy[0] is not a valid dimension"),
        ({"groupBy": ["journeySessionId"]}, "not supported by the simulator"),
        ({"filter": {"predicates": []}}, "filter.type"),
        ({"filter": {"type": "and", "predicates": [{"dimension": "nope", "value": "x"}]}}, "dimension"),
        ({"pageSize": 10}, "pageSize"),
        ({"colour": "blue"}, "colour"),
        ({"views": [{"target": "nWebActionsQualified", "name": "v", "function": "rangeBound"}]}, "timer"),
        ({"alternateTimeDimension": "sessionTime"}, "alternateTimeDimension"),
    ],
)
def test_invalid_query_bodies_are_400(api: JApi, contract: OpenAPI, overrides: dict[str, Any], fragment: str) -> None:
    body = funnel_body(**{k: v for k, v in overrides.items() if v is not None})
    for key in [k for k, v in overrides.items() if v is None]:
        body.pop(key, None)
    error = check(contract, api.post(QUERY, body), 400)
    assert error["code"] == "bad.request" and fragment in error["message"]
    assert error["status"] == 400 and error["contextId"]


def test_body_must_be_json(api: JApi) -> None:
    for content in (b"", b"{not json", b"[1, 2]"):
        response = api.http.post(QUERY, content=content, headers=api.headers | {"Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["code"] == "bad.request"
    wrong = api.http.put(QUERY, json={}, headers=api.headers)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert api.http.delete(f"{JOBS}/x/results", headers=api.headers).headers["Allow"] == "GET"


def test_sync_interval_limit_is_31_days(api: JApi, contract: OpenAPI) -> None:
    check(contract, api.query(interval="2024-01-01T00:00:00Z/2024-02-01T00:00:00Z"), 200)
    over = check(contract, api.query(interval="2024-01-01T00:00:00Z/2024-02-01T00:00:01Z"), 400)
    assert "31 days" in over["message"]
    # the async family takes longer intervals
    assert check(contract, api.submit(interval="2024-01-01T00:00:00Z/2024-02-20T00:00:00Z"), 202)["jobId"]


def test_too_many_groups_times_buckets_is_413(make_simulator, contract: OpenAPI) -> None:
    sim = make_simulator(frozen_now=NOW, legacy_media_type=None, journey_max_sync_cells=20)
    api = JApi(sim)
    too_big = check(contract, api.query(), 413)
    assert "async" in too_big["message"] and too_big["status"] == 413
    assert len(cells(check(contract, api.query(interval="2024-01-15T00:00:00Z/2024-01-16T00:00:00Z"), 200))) <= 20
    # the default limit of 10,000 lets 12 maps x 31 days through
    default = make_simulator(frozen_now=NOW)
    assert JApi(default).query(interval="2024-01-01T00:00:00Z/2024-02-01T00:00:00Z").status_code == 200
    api.close()


# ====================================================================== async jobs
def collect(api: JApi, contract: OpenAPI, job_id: str) -> tuple[dict, int]:
    """Page a job's results by cursor; return (cells, pages)."""
    got: dict = {}
    cursor, pages = None, 0
    while True:
        page = check(contract, api.results(job_id, cursor), 200)
        pages += 1
        part = cells(page)
        assert not set(part) & set(got)
        got.update(part)
        cursor = page.get("cursor")
        if not cursor:
            return got, pages
        assert pages < 50


def test_async_job_lifecycle(make_simulator, contract: OpenAPI) -> None:
    sim = make_simulator(frozen_now=NOW, legacy_media_type=None, journey_job_delay=8.0)
    api = JApi(sim)
    job_id = check(contract, api.submit(pageSize=4), 202)["jobId"]
    status = check(contract, api.job(job_id), 200)
    assert status == {"state": "QUEUED", "submissionDate": "2024-03-01T12:00:00.000Z"}
    sim.advance(timedelta(seconds=3))
    assert check(contract, api.job(job_id), 200)["state"] == "PENDING"
    early = check(contract, api.results(job_id), 400)
    assert "PENDING" in early["message"]
    sim.advance(timedelta(seconds=5))
    done = check(contract, api.job(job_id), 200)
    assert done["state"] == "FULFILLED"
    assert done["completionDate"] == "2024-03-01T12:00:08.000Z"
    assert done["expirationDate"] == "2024-03-02T12:00:08.000Z"
    got, pages = collect(api, contract, job_id)
    assert got == truth(sim, DAYS)
    groups = {map_id for map_id, _ in got}
    assert pages == -(-len(groups) // 4)  # one result = one group with all its buckets
    # cursors are bound to their job and tamper-evident
    cursor = api.results(job_id).json()["cursor"]
    other = check(contract, api.submit(), 202)["jobId"]
    sim.advance(timedelta(seconds=8))
    assert check(contract, api.results(other, cursor), 400)["code"] == "bad.request"
    assert check(contract, api.results(job_id, cursor[:-2] + "xx"), 400)["code"] == "bad.request"
    # expiry 24 h after completion
    sim.advance(timedelta(hours=24))
    assert check(contract, api.job(job_id), 200)["state"] == "EXPIRED"
    assert check(contract, api.results(job_id), 404)["code"] == "not.found"
    assert check(contract, api.job("no-such-job"), 404)["code"] == "not.found"
    assert sim.count_requests(f"{JOBS}/{job_id}/results") >= pages
    api.close()


def test_async_results_match_the_truth_in_a_larger_world(make_simulator, contract: OpenAPI) -> None:
    sim = make_simulator(frozen_now=NOW, legacy_media_type=None, n_action_maps=40, journey_job_delay=0.0)
    api = JApi(sim)
    job_id = check(contract, api.submit(interval="2024-01-01T00:00:00Z/2024-01-11T00:00:00Z", pageSize=7), 202)["jobId"]
    got, pages = collect(api, contract, job_id)
    assert got == truth(sim, [date(2024, 1, 1) + timedelta(days=i) for i in range(10)])
    assert pages == -(-len({m for m, _ in got}) // 7)
    api.close()


def test_delete_cancels_and_other_clients_cannot_see_a_job(make_simulator, contract: OpenAPI) -> None:
    clients = [ClientSpec("a", "sa"), ClientSpec("b", "sb")]
    sim = make_simulator(frozen_now=NOW, clients=clients, journey_job_delay=0.0)
    a, b = JApi(sim, "a", "sa"), JApi(sim, "b", "sb")
    job_id = check(contract, a.submit(), 202)["jobId"]
    assert check(contract, b.job(job_id), 404)["code"] == "not.found"
    assert check(contract, b.delete(job_id), 404)["code"] == "not.found"
    assert check(contract, a.delete(job_id), 204) is None
    assert check(contract, a.job(job_id), 200)["state"] == "CANCELLED"
    assert check(contract, a.results(job_id), 404)["code"] == "not.found"
    assert [j["state"] for j in sim.journey_jobs()] == ["CANCELLED"]
    a.close()
    b.close()


def test_concurrent_job_limit_per_client(make_simulator, contract: OpenAPI) -> None:
    clients = [ClientSpec("a", "sa"), ClientSpec("b", "sb")]
    sim = make_simulator(frozen_now=NOW, clients=clients, journey_job_delay=10.0, journey_max_concurrent_jobs=2)
    a, b = JApi(sim, "a", "sa"), JApi(sim, "b", "sb")
    first = check(contract, a.submit(), 202)["jobId"]
    check(contract, a.submit(), 202)
    over = a.submit()
    body = check(contract, over, 429)
    assert body["code"] == "too.many.requests.concurrent.jobs" and over.headers["Retry-After"] == "10"
    check(contract, b.submit(), 202)  # the limit is per client
    check(contract, a.delete(first), 204)  # cancelling frees a slot
    check(contract, a.submit(), 202)
    assert a.submit().status_code == 429
    sim.advance(timedelta(seconds=10))  # finished jobs don't count
    check(contract, a.submit(), 202)
    a.close()
    b.close()


def test_failed_stuck_and_expired_job_faults(make_simulator, contract: OpenAPI) -> None:
    sim = make_simulator(frozen_now=NOW, legacy_media_type=None, journey_job_delay=1.0)
    api = JApi(sim)
    sim.inject_journey_fault("failed_job")
    failed = check(contract, api.submit(), 202)["jobId"]
    sim.inject_journey_fault("stuck_job")
    stuck = check(contract, api.submit(), 202)["jobId"]
    sim.inject_journey_fault("expired_job", after_pages=1)
    expiring = check(contract, api.submit(pageSize=3), 202)["jobId"]
    sim.inject_journey_fault("expired_job")
    never = check(contract, api.submit(), 202)["jobId"]
    healthy = check(contract, api.submit(), 202)["jobId"]
    sim.advance(timedelta(hours=1))
    status = check(contract, api.job(failed), 200)
    assert status["state"] == "FAILED" and status["errorMessage"]
    assert check(contract, api.results(failed), 400)["code"] == "bad.request"
    assert check(contract, api.job(stuck), 200)["state"] == "PENDING"
    first = check(contract, api.results(expiring), 200)
    assert first["cursor"]
    assert check(contract, api.results(expiring, first["cursor"]), 404)["code"] == "not.found"
    assert check(contract, api.job(expiring), 200)["state"] == "EXPIRED"
    assert check(contract, api.job(never), 200)["state"] == "EXPIRED"
    assert check(contract, api.results(never), 404)["code"] == "not.found"
    assert check(contract, api.job(healthy), 200)["state"] == "FULFILLED"
    check(contract, api.delete(stuck), 204)
    api.close()


def test_repeating_cursor_fault(make_simulator, contract: OpenAPI) -> None:
    sim = make_simulator(frozen_now=NOW, legacy_media_type=None, journey_job_delay=0.0)
    api = JApi(sim)
    job_id = check(contract, api.submit(pageSize=2), 202)["jobId"]
    first = check(contract, api.results(job_id), 200)
    sim.inject_journey_fault("repeating_cursor")
    second = check(contract, api.results(job_id, first["cursor"]), 200)
    assert second["cursor"] == first["cursor"]
    third = check(contract, api.results(job_id, second["cursor"]), 200)
    assert third["cursor"] != first["cursor"] and cells(third) == cells(second)
    api.close()


# ====================================================================== bad-input faults on answers
@pytest.mark.parametrize(
    "kind",
    ["non_numeric_count", "bucket_outside_interval", "group_without_map_id", "unknown_metric", "unknown_field"],
)
@pytest.mark.parametrize("via", ["sync", "async"])
def test_shape_faults(make_simulator, contract: OpenAPI, kind: str, via: str) -> None:
    sim = make_simulator(frozen_now=NOW, legacy_media_type=None, journey_job_delay=0.0)
    api = JApi(sim)
    if via == "sync":
        sim.inject_journey_fault(kind)
        response = api.query()
    else:
        job_id = api.submit().json()["jobId"]
        sim.inject_journey_fault(kind, path_contains="/results")
        response = api.results(job_id)
    assert response.status_code == 200
    body = response.json()
    first = body["results"][0]
    bucket = first["data"][0]
    if kind == "non_numeric_count":
        assert bucket["metrics"][0]["stats"]["count"] == "NaN"
        with pytest.raises(InvalidData):  # the contract says integer
            contract.validate_response(_Request(response.request), _Response(response))
    elif kind == "bucket_outside_interval":
        assert bucket["interval"] == "2024-01-14T00:00:00.000Z/2024-01-15T00:00:00.000Z"
    elif kind == "group_without_map_id":
        assert first["group"] == {}
    elif kind == "unknown_metric":
        assert bucket["metrics"][-1] == {"metric": "nWebActionsTeleported", "stats": {"count": 7}}
    else:
        assert bucket["sampleRatio"] == 0.97
    # one answer only: the next one is clean again
    clean = api.query().json() if via == "sync" else api.results(job_id).json()
    assert cells(clean) == truth(sim, DAYS)
    api.close()


def test_unknown_field_on_the_listing_and_admin_faults(sim: SimulatorServer, api: JApi) -> None:
    sim.inject_journey_fault("unknown_field", path_contains="/journey/actionmaps", value=5)
    page = api.get(MAPS).json()
    assert page["entities"][0]["journeyPriority"] == 5
    assert "journeyPriority" not in api.get(MAPS).json()["entities"][0]
    admin = api.http
    assert admin.post("/_simulator/journey-faults", json={"kind": "unknown_metric", "value": "nNew"}).status_code == 200
    assert any(m["metric"] == "nNew" for m in api.query().json()["results"][0]["data"][0]["metrics"])
    assert admin.post("/_simulator/journey-faults", json={"kind": "bogus"}).status_code == 400
    admin.post("/_simulator/journey-faults", json={"kind": "unknown_metric"})
    assert admin.delete("/_simulator/journey-faults").status_code == 200
    assert cells(api.query().json()) == truth(sim, DAYS)
    with pytest.raises(ValueError):
        sim.inject_journey_fault("nope")


# ====================================================================== auth, permissions, rate limits
def test_permissions_per_client(make_simulator, contract: OpenAPI) -> None:
    clients = [
        ClientSpec("maps-only", "s1", permissions=(ACTION_MAP_PERMISSION,)),
        ClientSpec("aggs-only", "s2", permissions=(AGGREGATE_PERMISSION,)),
    ]
    sim = make_simulator(frozen_now=NOW, legacy_media_type=None, clients=clients)
    maps_only, aggs_only = JApi(sim, "maps-only", "s1"), JApi(sim, "aggs-only", "s2")
    check(contract, maps_only.get(MAPS), 200)
    check(contract, aggs_only.query(), 200)
    for response, permission in (
        (maps_only.query(), AGGREGATE_PERMISSION),
        (maps_only.submit(), AGGREGATE_PERMISSION),
        (maps_only.job("x"), AGGREGATE_PERMISSION),
        (aggs_only.get(MAPS), ACTION_MAP_PERMISSION),
    ):
        body = check(contract, response, 403)
        assert body["code"] == "missing.any.permissions" and permission in body["message"]
        assert body["messageParams"] == {"permissions": permission}
        assert body["contextId"] == response.headers["ININ-Correlation-Id"]
        assert all(name in response.headers for name in ININ)
    api_calls = [r for r in sim.request_log if r.path != "/oauth/token"]
    assert [r.counted for r in api_calls] == [True, True, False, False, False, False]
    no_token = httpx.get(f"{sim.api_url}{MAPS}")
    assert no_token.status_code == 401 and "X-RateLimit-Limit" not in no_token.headers
    maps_only.close()
    aggs_only.close()


def test_rate_headers_and_429(make_simulator, contract: OpenAPI) -> None:
    sim = make_simulator(frozen_now=NOW, legacy_media_type=None, client_limit=3, window_seconds=60.0)
    api = JApi(sim)
    answers = [api.get(MAPS), api.query(), api.submit()]
    assert [r.headers["inin-ratelimit-count"] for r in answers] == ["1", "2", "3"]
    assert {r.headers["inin-ratelimit-allowed"] for r in answers} == {"3"}
    assert all(1 <= int(r.headers["inin-ratelimit-reset"]) <= 60 for r in answers)  # seconds, not an epoch
    over = api.query()
    body = check(contract, over, 429)
    assert body["code"] == "too.many.requests.retry.after" and body["status"] == 429
    assert (
        body["message"]
        == f"Rate limit exceeded the maximum. Retry the request in [{over.headers['Retry-After']}] seconds"
    )
    assert body["contextId"] == over.headers["ININ-Correlation-Id"]
    assert body["details"] == [] and body["errors"] == []
    assert over.headers["inin-ratelimit-count"] == "3" and 1 <= int(over.headers["Retry-After"]) <= 60
    assert not any(h.lower().startswith("x-ratelimit") for h in over.headers)
    assert not sim.request_log[-1].counted
    api.close()


def test_injected_transport_faults_use_the_journey_429_body(sim: SimulatorServer, api: JApi, contract: OpenAPI) -> None:
    sim.inject_fault("429", retry_after=7, path_contains="/aggregates/query")
    over = api.query()
    assert check(contract, over, 429)["code"] == "too.many.requests.retry.after"
    assert over.headers["Retry-After"] == "7"
    sim.inject_fault("5xx", path_contains="/journey/actionmaps")
    assert check(contract, api.get(MAPS), 503)["code"] == "service.unavailable"
    assert check(contract, api.query(), 200)["results"]


# ====================================================================== determinism, admin, CLI
def test_same_seed_same_world_other_seed_differs() -> None:
    one, two, other = (_journey_truth(seed) for seed in (7, 7, 8))
    assert one == two and one != other


def _journey_truth(seed: int) -> tuple:
    sim = SimulatorServer(SimulatorConfig(seed=seed))
    maps = sim.action_maps()
    return maps, [sim.expected_action_map_funnel(m["id"], d) for m in maps for d in DAYS]


def test_admin_truth_endpoints(sim: SimulatorServer, api: JApi) -> None:
    admin = api.http
    assert admin.get("/_simulator/action-maps").json() == sim.action_maps()
    assert admin.get("/_simulator/action-map-roles").json() == sim.action_map_roles
    map_id = sim.action_map_roles["content_offer"]
    funnel = admin.get("/_simulator/expected-action-map-funnel", params={"actionMapId": map_id, "day": "2024-01-16"})
    assert funnel.json()["funnel"] == sim.expected_action_map_funnel(map_id, date(2024, 1, 16))
    assert set(funnel.json()["funnel"]) == set(FUNNEL_METRICS)
    sparse = sim.action_map_roles["sparse"]
    silent = next(
        d
        for d in DAYS + [date(2024, 1, 1) + timedelta(days=i) for i in range(60)]
        if sim.expected_action_map_funnel(sparse, d) is None
    )
    params = {"actionMapId": sparse, "day": silent.isoformat()}
    assert admin.get("/_simulator/expected-action-map-funnel", params=params).json() == {"funnel": None}
    assert admin.get("/_simulator/journey-jobs").json() == []
    assert not [r for r in admin.get("/_simulator/requests").json() if r["path"].startswith("/_simulator")]


def test_cli_help_and_journey_options() -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(
        [sys.executable, "-m", "pe_dev.simulator", "--help"], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode == 0
    for client in default_clients():
        assert client.client_id in out.stdout and client.client_secret in out.stdout
        assert all(p in out.stdout for p in client.permissions)
    for option in ("--action-maps", "--max-sync-cells", "--job-delay", "--max-jobs", "--permissions"):
        assert option in out.stdout
    parser = build_parser()
    assert all(a.help for a in parser._actions), "every option has a help text"
    args = parser.parse_args(
        ["--action-maps", "40", "--job-delay", "0", "--client", "c:s", "--permissions", "c=journey:actionmap:view"]
    )
    config = config_from_args(args)
    assert config.n_action_maps == 40 and config.journey_job_delay == 0.0
    assert config.clients[0].permissions == ("journey:actionmap:view",)
    assert config_from_args(parser.parse_args(["--legacy-media-type", "none"])).legacy_media_type is None
    with pytest.raises(ValueError):
        config_from_args(parser.parse_args(["--permissions", "ghost=x"]))
