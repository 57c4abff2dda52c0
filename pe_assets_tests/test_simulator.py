"""Tests of the Predictive Engagement simulator over real loopback sockets.

Every answer the contract describes is validated against the OpenAPI file with openapi-core.
Time-dependent rules use the simulator's settable clock and short rate windows, never long sleeps.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from pe_dev.simulator import (
    READ_SCOPES,
    SCORE_BUCKETS,
    WRITE_SCOPES,
    ClientSpec,
    SimulatorConfig,
    SimulatorServer,
)

CONTRACT = Path(__file__).resolve().parents[1] / "pe_assets" / "contract" / "predictive-engagement.openapi.yaml"
API = "/api/v2/predictive-engagement"
DAY = date(2024, 1, 15)
DAY_FROM, DAY_TO = "2024-01-15T00:00:00Z", "2024-01-16T00:00:00Z"
RATE_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "inin-ratelimit-count",
    "inin-ratelimit-allowed",
    "inin-ratelimit-reset",
)


# ------------------------------------------------------------------ contract validation
class _Request:
    """openapi-core Request protocol over an httpx request (host mapped to the spec's server)."""

    def __init__(self, request: httpx.Request) -> None:
        path = request.url.path
        self.host_url = "https://login.mypurecloud.com" if path == "/oauth/token" else "https://api.mypurecloud.com"
        self.path = path
        self.method = request.method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
        )
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "").lower()


class _Response:
    """openapi-core Response protocol over an httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.headers = Headers(list(response.headers.items()))
        self.content_type = response.headers.get("content-type", "").lower()
        self.data = response.content


@pytest.fixture(scope="module")
def contract() -> OpenAPI:
    return OpenAPI.from_file_path(str(CONTRACT))


def check(contract: OpenAPI, response: httpx.Response, status: int | None = None) -> Any:
    """Assert the status, validate request+response against the contract, return the JSON."""
    if status is not None:
        assert response.status_code == status, response.text
    contract.validate_response(_Request(response.request), _Response(response))
    return response.json()


# ------------------------------------------------------------------ client helpers
class Api:
    """A tiny test client: token handling plus GET helpers."""

    def __init__(self, sim: SimulatorServer, client_id: str | None = None, secret: str | None = None) -> None:
        self.sim = sim
        self.http = httpx.Client(base_url=sim.api_url, timeout=10)
        self.client_id = client_id or sim.client_id
        self.secret = secret or sim.client_secret
        self.token: str | None = None

    def get_token(self, scope: str | None = None) -> httpx.Response:
        data = {"grant_type": "client_credentials"}
        if scope is not None:
            data["scope"] = scope
        return self.http.post(f"{self.sim.login_url}/oauth/token", data=data, auth=(self.client_id, self.secret))

    def login(self, scope: str | None = None) -> Api:
        response = self.get_token(scope)
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]
        return self

    def get(self, url: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self.http.get(url, params=params or None, headers=headers)

    def journey(self, campaign_id: str, **params: Any) -> httpx.Response:
        base = {"dateFrom": DAY_FROM, "dateTo": DAY_TO, "groupBy": "step"}
        base.update(params)
        return self.get(f"{API}/campaigns/{campaign_id}/analytics", **{k: v for k, v in base.items() if v is not None})

    def scorecard(self, scorecard_id: str, day: date = DAY, **params: Any) -> httpx.Response:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        base = {
            "dateFrom": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "dateTo": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "metric": "performance",
        }
        base.update(params)
        return self.get(
            f"{API}/scorecards/{scorecard_id}/analytics", **{k: v for k, v in base.items() if v is not None}
        )

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def api(simulator: SimulatorServer):
    client = Api(simulator).login()
    yield client
    client.close()


def follow(api: Api, first: httpx.Response, contract: OpenAPI, key: str) -> list[dict[str, Any]]:
    """Follow nextPageUri to the end, validating each page; return the concatenated items."""
    page = check(contract, first, 200)
    items = list(page[key])
    while page["nextPageUri"]:
        assert page["nextPageUri"].startswith("/api/v2/"), "nextPageUri must be relative"
        assert "cursor=" in page["nextPageUri"]
        page = check(contract, api.get(page["nextPageUri"]), 200)
        items += page[key]
    return items


def assert_rate_headers(response: httpx.Response) -> None:
    for name in RATE_HEADERS:
        assert name in response.headers, f"{name} missing on {response.status_code}"
        int(response.headers[name])
    assert response.headers["ININ-Correlation-Id"]


# ====================================================================== OAuth
def test_token_by_basic_header_and_by_form_fields(simulator: SimulatorServer, contract: OpenAPI) -> None:
    with httpx.Client(base_url=simulator.login_url) as http:
        basic = http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=("pe-sim-client", "pe-sim-secret")
        )
        form = http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "pe-sim-client",
                "client_secret": "pe-sim-secret",
            },
        )
    for response in (basic, form):
        body = check(contract, response, 200)
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 3600
        assert set(body["scope"].split()) == set(READ_SCOPES)
    assert basic.json()["access_token"] != form.json()["access_token"]


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, ("pe-sim-client", "wrong"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, ("nobody", "pe-sim-secret"), 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "pe-sim-client"}, None, 401, "invalid_client"),
        ({"grant_type": "password"}, ("pe-sim-client", "pe-sim-secret"), 400, "unsupported_grant_type"),
        ({}, ("pe-sim-client", "pe-sim-secret"), 400, "invalid_request"),
        (
            {
                "grant_type": "client_credentials",
                "scope": "predictive-engagement:view predictive-engagement:edit",
            },
            ("pe-sim-client", "pe-sim-secret"),
            400,
            "invalid_scope",
        ),
    ],
)
def test_token_errors(simulator: SimulatorServer, contract: OpenAPI, data, auth, status, error) -> None:
    with httpx.Client(base_url=simulator.login_url) as http:
        response = http.post("/oauth/token", data=data, auth=auth)
    body = check(contract, response, status)
    assert body["error"] == error


def test_requested_scope_subset_is_granted_and_missing_scope_is_403(
    simulator: SimulatorServer, contract: OpenAPI
) -> None:
    api = Api(simulator)
    granted = check(contract, api.get_token(scope="predictive-engagement:view"), 200)
    assert granted["scope"] == "predictive-engagement:view"
    api.token = granted["access_token"]
    check(contract, api.get(f"{API}/campaigns"), 200)
    big = simulator.roles["big"]
    denied = api.journey(big)
    body = check(contract, denied, 403)
    assert body["code"] == "missing.any.permissions"
    assert "analytics:view" in body["message"]
    sc = simulator.scorecards()[0]["id"]
    assert check(contract, api.scorecard(sc), 403)["code"] == "missing.any.permissions"
    assert_rate_headers(denied)
    # a client whose allowed scopes lack the view scope cannot even list
    api.close()


def test_401_without_token_with_garbage_and_after_expiry(make_simulator, contract: OpenAPI) -> None:
    sim = make_simulator(token_lifetime=1)
    api = Api(sim)
    none = api.get(f"{API}/campaigns")
    assert check(contract, none, 401)["code"] == "authentication.required"
    assert_rate_headers(none)
    api.token = "not-a-token"
    assert check(contract, api.get(f"{API}/campaigns"), 401)["contextId"]
    api.login()
    assert api.get_token().json()["expires_in"] == 1
    check(contract, api.get(f"{API}/campaigns"), 200)
    time.sleep(1.05)
    expired = check(contract, api.get(f"{API}/campaigns"), 401)
    assert "expired" in expired["message"]
    api.login()
    check(contract, api.get(f"{API}/campaigns"), 200)
    api.close()


def test_revoke_and_expire_tokens(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    check(contract, api.get(f"{API}/campaigns"), 200)
    assert simulator.revoke_tokens(simulator.client_id) == 1
    assert "revoked" in check(contract, api.get(f"{API}/campaigns"), 401)["message"]
    api.login()
    simulator.expire_tokens()
    assert "expired" in check(contract, api.get(f"{API}/campaigns"), 401)["message"]


# ====================================================================== listings
def test_campaign_listing_cursor_pagination(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    first = api.get(f"{API}/campaigns", pageSize=5)
    assert_rate_headers(first)
    page = first.json()
    assert page["total"] == 12 and page["pageCount"] == 3 and page["pageNumber"] == 1
    items = follow(api, first, contract, "entities")
    assert items == simulator.campaigns()
    assert len({c["id"] for c in items}) == 12
    default = check(contract, api.get(f"{API}/campaigns"), 200)
    assert default["pageSize"] == 25 and default["nextPageUri"] is None


def test_campaign_listing_status_filter(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    roles = simulator.roles
    paused = check(contract, api.get(f"{API}/campaigns", status="paused"), 200)
    assert [c["id"] for c in paused["entities"]] == [roles["paused"]]
    both = api.http.get(
        f"{API}/campaigns",
        params=[("status", "paused"), ("status", "archived"), ("pageSize", "1")],
        headers={"Authorization": f"Bearer {api.token}"},
    )
    got = follow(api, both, contract, "entities")
    assert {c["id"] for c in got} == {roles["paused"], roles["archived"]}
    assert {c["status"] for c in got} == {"paused", "archived"}
    bad = check(contract, api.get(f"{API}/campaigns", status="deleted"), 400)
    assert bad["code"] == "bad.request"


@pytest.mark.parametrize("params", [{"pageSize": 0}, {"pageSize": 101}, {"pageNumber": 0}, {"cursor": "xyz"}])
def test_campaign_listing_bad_paging_is_400(api: Api, contract: OpenAPI, params) -> None:
    check(contract, api.get(f"{API}/campaigns", **params), 400)


def test_listing_cursor_cannot_be_reused_with_another_filter(api: Api, contract: OpenAPI) -> None:
    page = api.get(f"{API}/campaigns", pageSize=2).json()
    cursor = re.search(r"cursor=([^&]+)", page["nextPageUri"]).group(1)
    check(contract, api.get(f"{API}/campaigns", status="active", cursor=cursor), 400)


def test_scorecards_listing_and_detail(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    first = api.get(f"{API}/scorecards", pageSize=1)
    items = follow(api, first, contract, "entities")
    assert items == simulator.scorecards()
    assert 2 <= len(items) < len(simulator.campaigns())
    one = check(contract, api.get(f"{API}/scorecards/{items[0]['id']}"), 200)
    assert one == items[0]
    assert check(contract, api.get(f"{API}/scorecards/nope"), 404)["code"] == "not.found"
    # The contract lists no 400 for listScorecards (a gap); the body is still an ErrorBody.
    bad = api.get(f"{API}/scorecards", pageSize=500)
    assert bad.status_code == 400 and bad.json()["code"] == "bad.request"


def test_get_campaign_and_unknown_campaign(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    for camp in simulator.campaigns():
        assert check(contract, api.get(f"{API}/campaigns/{camp['id']}"), 200) == camp
    missing = api.get(f"{API}/campaigns/00000000-0000-4000-8000-000000000000")
    assert check(contract, missing, 404)["code"] == "not.found"
    assert_rate_headers(missing)


def test_listing_page_numbers_without_cursor_are_unstable(api: Api) -> None:
    seen: list[str] = []
    for number in (1, 2, 3, 4):
        seen += [c["id"] for c in api.get(f"{API}/campaigns", pageSize=3, pageNumber=number).json()["entities"]]
    assert len(seen) == 12
    assert len(set(seen)) < 12, "page-number arithmetic should produce duplicates (and so gaps)"


# ====================================================================== world shape
def test_world_roles_and_relations(simulator: SimulatorServer) -> None:
    roles = simulator.roles
    camps = {c["id"]: c for c in simulator.campaigns()}
    assert len(camps) == 12
    assert set(roles) == {"big", "damaged", "paused", "archived", "unscored"}
    assert camps[roles["paused"]]["status"] == "paused"
    assert camps[roles["archived"]]["status"] == "archived"
    assert camps[roles["big"]]["status"] == camps[roles["damaged"]]["status"] == "active"
    assert camps[roles["unscored"]]["scorecardId"] is None
    shared = Counter(c["scorecardId"] for c in camps.values() if c["scorecardId"])
    assert max(shared.values()) >= 2
    assert sum(c["status"] == "active" for c in camps.values()) >= len(camps) // 2
    for camp in camps.values():
        assert camp["createdDate"].startswith("2023-") and camp["modifiedDate"].startswith("2023-")
        assert camp["createdDate"] <= camp["modifiedDate"]


def test_funnel_data_quality(simulator: SimulatorServer) -> None:
    roles = simulator.roles
    extras = null_names = null_scores = 0
    for camp in simulator.campaigns():
        for day in (date(2024, 1, 1), DAY, date(2024, 2, 29)):
            steps = simulator.expected_steps(camp["id"], day)
            assert steps, "every day from 2024-01-01 on has data"
            ids = [s["stepId"] for s in steps if "stepId" in s]
            assert len(ids) == len(set(ids))
            for step in steps:
                assert 0.0 <= step["conversionRate"] <= 1.0
                assert step["averageScore"] is None or 0.0 <= step["averageScore"] <= 1.0
                assert step["exitReason"] != ""
                extras += "experimentalBucket" in step
                null_names += step["stepName"] is None
                null_scores += step["averageScore"] is None
            if camp["id"] == roles["damaged"]:
                assert "stepId" not in steps[1] and "contactCount" in steps[1]
                assert "contactCount" not in steps[2] and "stepId" in steps[2]
                assert sum("stepId" not in s for s in steps) == 1
                assert sum("contactCount" not in s for s in steps) == 1
            else:
                assert all("stepId" in s and "contactCount" in s for s in steps)
            if camp["id"] == roles["big"]:
                assert len(steps) == 1234
    assert extras and null_names and null_scores


# ====================================================================== campaign analytics
def test_journey_cursor_pagination_gives_every_step_once(
    simulator: SimulatorServer, api: Api, contract: OpenAPI
) -> None:
    big = simulator.roles["big"]
    first = api.journey(big, pageSize=1000)
    first_page = first.json()
    assert len(first_page["steps"]) == 1000 and first_page["nextPageUri"]
    steps = follow(api, first, contract, "steps")
    assert steps == simulator.expected_steps(big, DAY)
    assert len({s["stepId"] for s in steps}) == 1234
    second = api.get(first_page["nextPageUri"]).json()
    assert second["metrics"] == first_page["metrics"] == simulator.expected_metrics(big, DAY)
    assert second["pageNumber"] == 2 and second["nextPageUri"] is None
    # default page size is 100
    assert len(api.journey(big).json()["steps"]) == 100


def test_page_number_arithmetic_without_cursor_gives_duplicates_and_gaps(simulator: SimulatorServer, api: Api) -> None:
    big = simulator.roles["big"]
    ids: list[str] = []
    for number in range(1, 8):  # 7 pages of 200 cover 1234 steps
        ids += [s["stepId"] for s in api.journey(big, pageSize=200, pageNumber=number).json()["steps"]]
    truth = {s["stepId"] for s in simulator.expected_steps(big, DAY)}
    assert len(ids) == 1234
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    gaps = truth - set(ids)
    assert duplicates and gaps
    # the same page asked twice by number alone differs: the order is not stable
    a = api.journey(big, pageSize=200, pageNumber=2).json()["steps"]
    b = api.journey(big, pageSize=200, pageNumber=2).json()["steps"]
    assert a != b


def test_damaged_campaign_steps(simulator: SimulatorServer, api: Api) -> None:
    damaged = simulator.roles["damaged"]
    body = api.journey(damaged).json()
    assert body["steps"] == simulator.expected_steps(damaged, DAY)
    assert "stepId" not in body["steps"][1]
    assert "contactCount" not in body["steps"][2]


@pytest.mark.parametrize(
    "params",
    [
        {"dateFrom": "yesterday"},
        {"dateFrom": "2024-01-15T00:00:00"},  # no offset
        {"dateFrom": DAY_TO, "dateTo": DAY_FROM},
        {"dateFrom": DAY_FROM, "dateTo": DAY_FROM},
        {"groupBy": None},
        {"groupBy": "campaign"},
        {"pageSize": 1001},
        {"pageSize": 0},
        {"pageNumber": 0},
        {"dateFrom": "2024-01-01T00:00:00Z", "dateTo": "2024-03-01T00:00:00Z"},  # > 31 days
        {"cursor": "AAAA"},
    ],
)
def test_journey_bad_requests_are_400(simulator: SimulatorServer, api: Api, contract: OpenAPI, params) -> None:
    body = check(contract, api.journey(simulator.roles["big"], **params), 400)
    assert body["code"] == "bad.request" and body["contextId"]


def test_journey_tampered_or_foreign_cursor_is_400(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    big = simulator.roles["big"]
    nxt = api.journey(big, pageSize=1000).json()["nextPageUri"]
    cursor = re.search(r"cursor=([^&]+)", nxt).group(1)
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    forged = base64.urlsafe_b64encode(raw.replace(b'"o":1000', b'"o":1001')).rstrip(b"=").decode()
    assert forged != cursor
    check(contract, api.journey(big, pageSize=1000, cursor=forged), 400)
    other = simulator.roles["damaged"]
    check(contract, api.journey(other, pageSize=1000, cursor=cursor), 400)
    check(contract, api.journey(big, pageSize=1000, cursor=cursor, dateFrom="2024-01-14T00:00:00Z"), 400)


def test_journey_day_not_complete_yet(make_simulator, contract: OpenAPI) -> None:
    sim = make_simulator(frozen_now=datetime(2024, 1, 15, 18, 0, tzinfo=UTC))
    api = Api(sim).login()
    big = sim.roles["big"]
    body = check(contract, api.journey(big), 400)
    assert "not complete" in body["message"]
    sim.advance(timedelta(hours=6))
    check(contract, api.journey(big), 200)
    api.close()


def test_journey_unknown_and_archived_campaign_404(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    assert check(contract, api.journey("nope"), 404)["code"] == "not.found"
    archived = simulator.roles["archived"]
    assert check(contract, api.journey(archived), 404)["code"] == "not.found"
    assert check(contract, api.get(f"{API}/campaigns/{archived}"), 200)["status"] == "archived"


def test_archive_mid_pagination(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    big = simulator.roles["big"]
    simulator.archive_campaign(big, after_pages=1)
    first = check(contract, api.journey(big, pageSize=1000), 200)
    second = api.get(first["nextPageUri"])
    assert check(contract, second, 404)["code"] == "not.found"
    camp = check(contract, api.get(f"{API}/campaigns/{big}"), 200)
    assert camp["status"] == "archived"
    archived_now = check(contract, api.get(f"{API}/campaigns", status="archived"), 200)
    assert big in {c["id"] for c in archived_now["entities"]}


def test_cursor_issued_before_archiving_then_404(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    big = simulator.roles["big"]
    first = check(contract, api.journey(big, pageSize=1000), 200)
    simulator.archive_campaign(big)
    check(contract, api.get(first["nextPageUri"]), 404)
    check(contract, api.journey(big), 404)


def test_non_day_window_is_computed_on_the_fly_and_costs_two(
    simulator: SimulatorServer, api: Api, contract: OpenAPI
) -> None:
    damaged = simulator.roles["damaged"]
    before = int(api.get(f"{API}/campaigns").headers["X-RateLimit-Remaining"])
    half = api.journey(damaged, dateFrom="2024-01-15T06:00:00Z", dateTo="2024-01-15T18:00:00Z")
    # damaged steps break JourneyStep's required list, so check the shape by hand here
    assert half.status_code == 200
    assert int(half.headers["X-RateLimit-Remaining"]) == before - 2
    assert simulator.request_log[-1].cost == 2
    day_steps = simulator.expected_steps(damaged, DAY)
    half_steps = half.json()["steps"]
    assert len(half_steps) == len(day_steps)
    assert half_steps[0]["contactCount"] < day_steps[0]["contactCount"]
    week = api.journey(simulator.roles["unscored"], dateFrom="2024-01-15T00:00:00Z", dateTo="2024-01-22T00:00:00Z")
    body = check(contract, week, 200)
    assert (
        body["metrics"]["totalContacts"] > simulator.expected_metrics(simulator.roles["unscored"], DAY)["totalContacts"]
    )
    assert simulator.request_log[-1].cost == 2


# ====================================================================== scorecard analytics
def test_scorecard_analytics_shape(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    for sc in simulator.scorecards():
        body = check(contract, api.scorecard(sc["id"]), 200)
        assert body == simulator.expected_scorecard(sc["id"], DAY)
        assert body["modelVersion"] == sc["modelVersion"]
        assert list(body["scoreDistribution"]) == list(SCORE_BUCKETS)
        assert all(0 <= v <= 1 for v in body["performanceMetrics"].values())
    month = check(
        contract,
        api.get(
            f"{API}/scorecards/{sc['id']}/analytics",
            dateFrom="2024-01-01T00:00:00Z",
            dateTo="2024-01-31T00:00:00Z",
            metric="performance",
        ),
        200,
    )
    assert sum(month["scoreDistribution"].values()) > sum(body["scoreDistribution"].values())


@pytest.mark.parametrize(
    "params",
    [
        {"metric": None},
        {"metric": "accuracy"},
        {"dateFrom": "2024-01-15T06:00:00Z"},
        {"dateTo": "2024-01-14T00:00:00Z"},
        {"dateFrom": "garbage"},
    ],
)
def test_scorecard_analytics_bad_requests(simulator: SimulatorServer, api: Api, contract: OpenAPI, params) -> None:
    check(contract, api.scorecard(simulator.scorecards()[0]["id"], **params), 400)


def test_scorecard_analytics_unknown_is_404(api: Api, contract: OpenAPI) -> None:
    check(contract, api.scorecard("no-such-scorecard"), 404)


def test_scorecard_outcomes_provisional_then_final(make_simulator, contract: OpenAPI) -> None:
    end_of_day = datetime(2024, 1, 16, tzinfo=UTC)
    sim = make_simulator(frozen_now=end_of_day + timedelta(hours=1))
    api = Api(sim).login()
    sc = sim.scorecards()[0]["id"]
    provisional = check(contract, api.scorecard(sc), 200)["performanceMetrics"]
    sim.set_now(end_of_day + timedelta(hours=47, minutes=59))
    assert check(contract, api.scorecard(sc), 200)["performanceMetrics"] == provisional
    sim.advance(timedelta(minutes=1))  # exactly 48 h after the window ended
    final = check(contract, api.scorecard(sc), 200)["performanceMetrics"]
    for key in ("actualConversionRate", "precision", "recall", "f1Score"):
        assert final[key] != provisional[key], key
    assert final["auc"] == provisional["auc"]
    assert final["predictedConversionRate"] == provisional["predictedConversionRate"]
    sim.advance(timedelta(days=30))
    assert check(contract, api.scorecard(sc), 200)["performanceMetrics"] == final
    assert sim.expected_scorecard(sc, DAY)["performanceMetrics"] == final
    api.close()


def test_retraining_raises_version_and_changes_past_metrics(make_simulator, contract: OpenAPI) -> None:
    sim = make_simulator(frozen_now=datetime(2024, 6, 1, 12, tzinfo=UTC))
    twin = make_simulator(frozen_now=datetime(2024, 6, 1, 12, tzinfo=UTC))
    api = Api(sim).login()
    sc = sim.scorecards()[0]
    before = check(contract, api.scorecard(sc["id"]), 200)
    sim.retrain_scorecard(sc["id"])
    after = check(contract, api.scorecard(sc["id"]), 200)
    assert int(after["modelVersion"]) == int(before["modelVersion"]) + 1
    assert after["lastRetrainedDate"] == "2024-06-01T12:00:00Z"
    assert after["performanceMetrics"]["precision"] != before["performanceMetrics"]["precision"]
    assert after["performanceMetrics"]["actualConversionRate"] == before["performanceMetrics"]["actualConversionRate"]
    detail = check(contract, api.get(f"{API}/scorecards/{sc['id']}"), 200)
    assert detail["modelVersion"] == after["modelVersion"]
    twin.retrain_scorecard(sc["id"])
    assert twin.expected_scorecard(sc["id"], DAY) == after  # deterministic in (seed, scorecard, day, version)
    api.close()


# ====================================================================== rate limits
def test_per_client_limit_429_and_headers(make_simulator, contract: OpenAPI) -> None:
    sim = make_simulator(client_limit=3, org_limit=100, window_seconds=1.0)
    api = Api(sim).login()
    api.login()  # token requests are never counted
    remaining = [int(api.get(f"{API}/campaigns").headers["X-RateLimit-Remaining"]) for _ in range(3)]
    assert remaining == [2, 1, 0]
    over = api.get(f"{API}/campaigns")
    body = check(contract, over, 429)
    assert body["code"] == "too.many.requests" and body["status"] == 429
    assert body["contextId"] == over.headers["ININ-Correlation-Id"]
    assert int(over.headers["Retry-After"]) >= 1
    assert over.headers["X-RateLimit-Limit"] == over.headers["inin-ratelimit-allowed"] == "3"
    assert over.headers["X-RateLimit-Remaining"] == "0"
    assert_rate_headers(over)
    assert not sim.request_log[-1].counted
    time.sleep(sim.limiter.reset_in() + 0.02)
    check(contract, api.get(f"{API}/campaigns"), 200)
    api.close()


def test_org_limit_spans_clients(make_simulator, contract: OpenAPI) -> None:
    clients = [ClientSpec("a", "sa"), ClientSpec("b", "sb")]
    sim = make_simulator(clients=clients, client_limit=10, org_limit=4, window_seconds=5.0)
    a, b = Api(sim, "a", "sa").login(), Api(sim, "b", "sb").login()
    for _ in range(3):
        check(contract, a.get(f"{API}/scorecards"), 200)
    last = check(contract, b.get(f"{API}/scorecards"), 200)
    assert last["total"] >= 2
    over = b.get(f"{API}/scorecards")
    check(contract, over, 429)
    assert over.headers["X-RateLimit-Limit"] == "4"  # the binding (org) bucket is reported
    a.close()
    b.close()


def test_write_scope_token_gets_stricter_limit(simulator: SimulatorServer, contract: OpenAPI) -> None:
    reader = Api(simulator).login()
    writer = Api(simulator, "pe-sim-writer", "pe-sim-writer-secret").login()
    assert set(WRITE_SCOPES) <= set(writer.get_token().json()["scope"].split())
    read_limit = int(reader.get(f"{API}/campaigns").headers["X-RateLimit-Limit"])
    write_limit = int(writer.get(f"{API}/campaigns").headers["X-RateLimit-Limit"])
    assert write_limit == read_limit // 2
    # the same writer client asking only for read scopes is back to the normal limit
    writer.login(scope=" ".join(READ_SCOPES))
    assert int(writer.get(f"{API}/campaigns").headers["X-RateLimit-Limit"]) == read_limit
    reader.close()
    writer.close()


# ====================================================================== faults
def test_fault_5xx_and_spurious_429(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    simulator.inject_fault("5xx")
    err = api.get(f"{API}/campaigns")
    assert err.status_code == 503
    assert set(err.json()) >= {"message", "code", "status", "contextId"}
    assert_rate_headers(err)
    simulator.inject_fault("429", retry_after=7, path_contains="/scorecards")
    check(contract, api.get(f"{API}/campaigns"), 200)  # path does not match
    over = api.get(f"{API}/scorecards")
    assert check(contract, over, 429)["code"] == "too.many.requests"
    assert over.headers["Retry-After"] == "7"
    check(contract, api.get(f"{API}/scorecards"), 200)
    faults = [r.fault for r in simulator.request_log]
    assert faults.count("5xx") == 1 and faults.count("429") == 1


def test_fault_drop_closes_without_answer(simulator: SimulatorServer, api: Api) -> None:
    simulator.inject_fault("drop", count=2)
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError):
            api.get(f"{API}/campaigns")
    assert api.get(f"{API}/campaigns").status_code == 200
    assert [r.status for r in simulator.request_log[-3:]] == [None, None, 200]


def test_fault_slow_exceeds_client_timeout(simulator: SimulatorServer, api: Api) -> None:
    simulator.inject_fault("slow", delay=0.5)
    with pytest.raises(httpx.ReadTimeout):
        api.http.get(f"{API}/campaigns", headers={"Authorization": f"Bearer {api.token}"}, timeout=0.15)
    logged_before = len(simulator.request_log)
    assert api.get(f"{API}/campaigns").status_code == 200
    # The fault was spent on the first request: the second one is served without it (the first
    # one's record is written when its delay ends, which may be after the second's).
    assert simulator.request_log[logged_before].fault is None
    deadline = time.monotonic() + 10
    while not any(r.fault == "slow" for r in simulator.request_log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(str(r.fault) for r in simulator.request_log if r.path.endswith("/campaigns")) == ["None", "slow"]


def test_fault_revoke(simulator: SimulatorServer, api: Api, contract: OpenAPI) -> None:
    simulator.inject_fault("revoke")
    assert check(contract, api.get(f"{API}/campaigns"), 401)["code"] == "bad.credentials"
    check(contract, api.get(f"{API}/campaigns"), 401)  # the token stays revoked
    api.login()
    check(contract, api.get(f"{API}/campaigns"), 200)


def test_fault_on_token_endpoint(simulator: SimulatorServer) -> None:
    simulator.inject_fault("5xx", path_contains="/oauth/token")
    api = Api(simulator)
    assert api.get_token().status_code == 503
    assert api.get_token().status_code == 200
    api.close()


def test_random_faults_are_seeded(make_simulator) -> None:
    def statuses(sim: SimulatorServer) -> list[int | None]:
        api = Api(sim).login()
        out: list[int | None] = []
        for _ in range(12):
            try:
                out.append(api.get(f"{API}/scorecards").status_code)
            except httpx.RemoteProtocolError:
                out.append(None)
        api.close()
        return out

    cfg = {"fault_rate": 0.5, "fault_kinds": ("5xx", "429", "drop"), "fault_seed": 11}
    first, second = statuses(make_simulator(**cfg)), statuses(make_simulator(**cfg))
    assert first == second
    assert 200 in first and len(set(first)) >= 3


# ====================================================================== misc HTTP
def test_unknown_path_and_wrong_method(api: Api) -> None:
    missing = api.get("/api/v2/predictive-engagement/nothing")
    assert missing.status_code == 404 and missing.json()["code"] == "not.found"
    assert_rate_headers(missing)
    wrong = api.http.post(f"{API}/campaigns", headers={"Authorization": f"Bearer {api.token}"})
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET"
    assert set(wrong.json()) >= {"message", "code", "status", "contextId"}
    assert api.http.get("/oauth/token").status_code == 405


def test_request_log_has_no_secrets_and_goes_to_file(make_simulator, tmp_path: Path) -> None:
    log_file = tmp_path / "requests.jsonl"
    sim = make_simulator(request_log_path=str(log_file))
    api = Api(sim).login()
    api.get(f"{API}/campaigns")
    api.journey(sim.roles["unscored"], dateFrom="2024-01-15T00:00:00Z", dateTo="2024-01-15T12:00:00Z")
    api.get("/nowhere")
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines == sim.log_records()
    assert [r["status"] for r in lines] == [200, 200, 200, 404]
    assert [r["cost"] for r in lines] == [0, 1, 2, 0]
    assert lines[1]["client_id"] == "pe-sim-client" and lines[1]["counted"] is True
    text = log_file.read_text()
    assert sim.client_secret not in text and api.token not in text
    assert {"monotonic", "wall_time", "method", "path", "query", "fault"} <= set(lines[0])
    api.close()


def test_latency_is_added_to_api_requests(make_simulator) -> None:
    sim = make_simulator(latency=0.2)
    api = Api(sim).login()
    started = time.monotonic()
    assert api.get(f"{API}/scorecards").status_code == 200
    assert time.monotonic() - started >= 0.2
    api.close()


def test_keep_alive_reuses_one_connection(simulator: SimulatorServer, api: Api) -> None:
    first = api.get(f"{API}/campaigns")
    second = api.get(f"{API}/scorecards")
    assert first.http_version == second.http_version == "HTTP/1.1"
    assert first.headers.get("connection", "").lower() != "close"


# ====================================================================== determinism
def test_same_seed_same_answers_other_seed_differs(make_simulator, contract: OpenAPI) -> None:
    frozen = datetime(2024, 3, 1, tzinfo=UTC)
    sims = [make_simulator(seed=42, frozen_now=frozen) for _ in range(2)] + [make_simulator(seed=43, frozen_now=frozen)]
    answers = []
    for sim in sims:
        api = Api(sim).login()
        campaigns = follow(api, api.get(f"{API}/campaigns", pageSize=4), contract, "entities")
        steps = follow(api, api.journey(sim.roles["big"], pageSize=1000), contract, "steps")
        scorecard = api.scorecard(sim.scorecards()[0]["id"]).json()
        answers.append((campaigns, steps, scorecard, api.journey(sim.roles["big"], pageSize=1000).json()))
        api.close()
    assert answers[0] == answers[1]
    assert answers[0][0] != answers[2][0]


# ====================================================================== admin + CLI
def test_admin_endpoints(simulator: SimulatorServer, api: Api) -> None:
    admin = api.http
    clock = admin.post("/_simulator/clock", json={"now": "2024-02-01T00:00:00Z"}).json()
    assert clock == {"now": "2024-02-01T00:00:00Z", "frozen": True}
    assert admin.post("/_simulator/clock", json={"advanceSeconds": 3600}).json()["now"] == "2024-02-01T01:00:00Z"
    big = admin.get("/_simulator/roles").json()["big"]
    steps = admin.get("/_simulator/expected-steps", params={"campaignId": big, "day": "2024-01-15"}).json()
    assert steps == simulator.expected_steps(big, DAY)
    assert admin.post("/_simulator/faults", json={"kind": "5xx", "count": 1}).status_code == 200
    assert api.get(f"{API}/campaigns").status_code == 503
    assert admin.post("/_simulator/faults", json={"kind": "bogus"}).status_code == 400
    sc = simulator.scorecards()[0]
    retrained = admin.post("/_simulator/retrain", json={"scorecardId": sc["id"]}).json()
    assert int(retrained["modelVersion"]) == int(sc["modelVersion"]) + 1
    expected = admin.get("/_simulator/expected-scorecard", params={"scorecardId": sc["id"], "day": "2024-01-15"})
    assert expected.json()["modelVersion"] == retrained["modelVersion"]
    assert admin.post("/_simulator/archive", json={"campaignId": big, "afterPages": 1}).status_code == 200
    assert api.journey(big).status_code == 200
    assert api.journey(big).status_code == 404
    assert admin.post("/_simulator/revoke", json={}).json()["revoked"] >= 1
    assert api.get(f"{API}/campaigns").status_code == 401
    log = admin.get("/_simulator/requests").json()
    assert [r["status"] for r in log[-4:]] == [503, 200, 404, 401]
    assert admin.get("/_simulator/requests", params={"since": len(log) - 1}).json() == log[-1:]
    assert admin.get("/_simulator/nothing").status_code == 404
    assert admin.post("/_simulator/archive", json={"campaignId": "nope"}).status_code == 404


def test_cli_starts_answers_and_stops(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pe_dev.simulator", "--port", "0", "--seed", "5", "--campaigns", "8"]
    cmd += ["--client", "cli-client:cli-secret", "--big-steps", "50", "--window", "2"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        url = match.group(1)
        with httpx.Client(base_url=url, timeout=5) as http:
            token = http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=("cli-client", "cli-secret")
            ).json()["access_token"]
            listing = http.get(f"{API}/campaigns", headers={"Authorization": f"Bearer {token}"})
            assert listing.status_code == 200 and listing.json()["total"] == 8
            big = http.get("/_simulator/roles").json()["big"]
            steps = http.get("/_simulator/expected-steps", params={"campaignId": big, "day": "2024-01-15"}).json()
            assert len(steps) == 50
            assert http.get("/_simulator/requests").json()[-1]["status"] == 200
            # same seed in another process -> the same world
            twin = SimulatorServer(SimulatorConfig(seed=5, n_campaigns=8, big_campaign_steps=50))
            assert twin.roles["big"] == big
            assert twin.expected_steps(big, DAY) == steps
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
