"""Client tests against a tiny scripted loopback server: payload defence, safety, errors.

These stage what the simulator cannot (HTML with 200, NaN, a foreign nextPageUri, write scopes
granted...). Real sockets and a real httpx client: nothing is mocked.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from pe_assets.client import (
    ApiError,
    AuthenticationError,
    ClientConfigError,
    NotFoundError,
    OAuthCredentials,
    PaginationError,
    PayloadError,
    PredictiveEngagementClient,
    RetryAfterTooLong,
    ServerError,
)
from pe_assets_tests.scripted_server import Canned, ScriptedServer

# ---------------------------------------------------------------------------------------------
CID = "camp-1"
DAY = date(2024, 1, 15)
JOURNEY = f"/api/v2/predictive-engagement/campaigns/{CID}/analytics"
SECRET = "s3cr3t-VALUE-never-shown"


def journey_page(next_uri: str | None = None, **overrides: Any) -> dict[str, Any]:
    page: dict[str, Any] = {
        "campaignId": CID,
        "dateFrom": "2024-01-15T00:00:00Z",
        "dateTo": "2024-01-16T00:00:00Z",
        "metrics": {
            "totalContacts": 10,
            "totalConverted": 2,
            "overallConversionRate": 0.2,
            "averageScore": 0.5,
        },
        "steps": [{"stepId": "a", "contactCount": 10, "conversionRate": 1.0, "extra": "kept"}],
        "nextPageUri": next_uri,
    }
    page.update(overrides)
    return page


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        yield srv


def make_client(srv: ScriptedServer, **kw: Any) -> PredictiveEngagementClient:
    kw.setdefault("requests_per_minute", 1000)
    kw.setdefault("backoff_seconds", 0.01)
    return PredictiveEngagementClient(srv.url, srv.url, [OAuthCredentials("cid-1", SECRET)], **kw)


# -- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "scopes",
    [
        ("predictive-engagement:view", "predictive-engagement:edit"),
        ("predictive-engagement:view", "predictive-engagement:campaign:edit"),
        ("predictive-engagement:scorecard:edit",),
        ("predictive-engagement:view", "predictive-engagement:analytics:view", "offline_access"),
    ],
)
def test_write_or_extra_scope_refused_at_construction(scopes):
    with pytest.raises(ClientConfigError, match="scope"):
        PredictiveEngagementClient(
            "https://api.example.com",
            "https://login.example.com",
            [OAuthCredentials("c", "s")],
            scopes=scopes,
        )


@pytest.mark.parametrize("url", ["http://api.mypurecloud.com", "http://10.0.0.5:8080", "ftp://127.0.0.1"])
def test_plain_http_only_for_loopback(url):
    with pytest.raises(ClientConfigError):
        PredictiveEngagementClient(url, "https://login.example.com", [OAuthCredentials("c", "s")])


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://127.1.2.3:8", "http://localhost:9", "http://[::1]:9"])
def test_plain_http_accepted_for_loopback(url):
    PredictiveEngagementClient(url, url, [OAuthCredentials("c", "s")]).close()


def test_secret_never_in_repr():
    creds = OAuthCredentials("my-client", SECRET)
    assert SECRET not in repr(creds) and SECRET not in str(creds)
    with PredictiveEngagementClient("https://api.example.com", "https://login.example.com", [creds]) as client:
        assert SECRET not in repr(client)
        assert "my-client" in repr(client)
        assert SECRET not in repr(client.stats)


# -- nextPageUri resolution ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("next_uri", "ok"),
    [
        ("/api/v2/x?cursor=abc", True),
        ("https://api.example.com/api/v2/x?cursor=1", True),
        ("https://api.example.com:443/api/v2/x", True),
        ("https://evil.example.com/api/v2/x", False),
        ("//evil.example.com/api/v2/x", False),
        ("http://api.example.com/api/v2/x", False),
        ("https://api.example.com:8443/api/v2/x", False),
        ("https://user:pw@api.example.com/api/v2/x", False),
    ],
)
def test_resolve_next_stays_on_api_host(next_uri, ok):
    with PredictiveEngagementClient(
        "https://api.example.com", "https://login.example.com", [OAuthCredentials("c", "s")]
    ) as client:
        if ok:
            assert client._resolve_next("GET /x", next_uri).startswith("https://api.example.com")
        else:
            with pytest.raises(PaginationError, match="outside"):
                client._resolve_next("GET /x", next_uri)


def test_foreign_next_page_uri_refused_end_to_end(server):
    """The page points at another loopback server: no request (and no token) ever reaches it."""
    with ScriptedServer() as foreign:
        foreign.script(JOURNEY, default=Canned(200, journey_page()))
        server.script(JOURNEY, Canned(200, journey_page(next_uri=f"{foreign.url}{JOURNEY}?cursor=x")))
        with make_client(server) as client, pytest.raises(PaginationError, match="outside"):
            client.get_campaign_journey_pages(CID, DAY)
        assert foreign.requests == []


# -- payload defence -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html><body>Maintenance</body></html>", "not valid JSON"),
        (json.dumps(journey_page())[:-20].encode(), "not valid JSON"),
        (b'{"campaignId": "\xff\xfe"}', "not UTF-8"),
        (json.dumps(journey_page()).replace("0.2,", "NaN,", 1).encode(), "not valid JSON"),
        (json.dumps(journey_page()).replace("0.2,", "Infinity,", 1).encode(), "not valid JSON"),
        (journey_page(campaignId="camp-2"), "campaignId"),
        (journey_page(dateFrom="2024-01-14T00:00:00Z"), "dateFrom"),
        (journey_page(dateTo="2024-01-17T00:00:00Z"), "dateTo"),
        (journey_page(steps={"a": 1}), "steps"),
        (journey_page(metrics=None), "metrics"),
        ({k: v for k, v in journey_page().items() if k != "nextPageUri"}, "nextPageUri"),
        ([1, 2, 3], "not a JSON object"),
    ],
)
def test_bad_journey_payload_is_payload_error(server, body, match):
    server.script(JOURNEY, Canned(200, body, {"ININ-Correlation-Id": "ctx-77"}))
    with make_client(server) as client, pytest.raises(PayloadError, match=match) as info:
        client.get_campaign_journey_pages(CID, DAY)
    assert JOURNEY in str(info.value) and "HTTP 200" in str(info.value)


def test_damaged_steps_are_returned_unchanged(server):
    """A step without stepId is the transform's business: the client passes it through."""
    page = journey_page(steps=[{"contactCount": 3}, {"stepId": "x"}], unknownField={"kept": True})
    page["dateFrom"] = "2024-01-15T00:00:00.000+00:00"  # another spelling of the same instant
    server.script(JOURNEY, Canned(200, page))
    with make_client(server) as client:
        assert client.get_campaign_journey_pages(CID, DAY) == [page]


def test_pagination_loop_refused(server):
    nxt = f"{JOURNEY}?cursor=same"
    server.script(JOURNEY, default=Canned(200, journey_page(next_uri=nxt)))
    with make_client(server) as client, pytest.raises(PaginationError, match="loop"):
        client.get_campaign_journey_pages(CID, DAY)
    assert len(server.api_requests()) == 2


def test_pagination_bound(server):
    server.script(JOURNEY, *[Canned(200, journey_page(next_uri=f"{JOURNEY}?cursor={i}")) for i in range(10)])
    with make_client(server, max_pages=5) as client, pytest.raises(PaginationError, match="more than 5"):
        client.get_campaign_journey_pages(CID, DAY)
    assert len(server.api_requests()) == 5


def test_pages_returned_raw_in_order(server):
    pages = [journey_page(next_uri=f"{JOURNEY}?cursor=2", n=1), journey_page(n=2)]
    server.script(JOURNEY, *[Canned(200, p) for p in pages])
    with make_client(server) as client:
        assert client.get_campaign_journey_pages(CID, DAY) == pages
    first, second = server.api_requests()
    assert "groupBy=step" in first.query and "pageSize=1000" in first.query
    assert "dateFrom=2024-01-15T00%3A00%3A00Z" in first.query and "dateTo=2024-01-16T00%3A00%3A00Z" in first.query
    assert second.query == "cursor=2"  # the cursor URI is followed as given
    assert first.authorization == second.authorization == "Bearer tok-SECRET-abc"


# -- tokens --------------------------------------------------------------------------------------
def test_granted_write_scope_rejected(server):
    server.token_body["scope"] = (
        "predictive-engagement:view predictive-engagement:analytics:view predictive-engagement:edit"
    )
    server.script(JOURNEY, default=Canned(200, journey_page()))
    with make_client(server) as client, pytest.raises(ClientConfigError, match="write scope"):
        client.get_campaign_journey_pages(CID, DAY)
    assert server.api_requests() == []


@pytest.mark.parametrize("missing", ["access_token", "expires_in"])
def test_token_without_required_field_is_payload_error(server, missing):
    del server.token_body[missing]
    with make_client(server) as client, pytest.raises(PayloadError, match=missing):
        client.get_campaign(CID)
    assert server.api_requests() == []


def test_token_endpoint_refusal_not_retried(server):
    server.token_status = 401
    server.token_body = {"error": "invalid_client", "description": "bad secret"}
    with make_client(server) as client, pytest.raises(AuthenticationError) as info:
        client.get_campaign(CID)
    assert info.value.status == 401 and SECRET not in str(info.value)
    assert len(server.requests) == 1


def test_token_request_shape(server):
    server.script(f"/api/v2/predictive-engagement/campaigns/{CID}", Canned(200, {"id": CID, "status": "active"}))
    with make_client(server) as client:
        client.get_campaign(CID)
        assert client.stats.token_requests == 1 and client.stats.requests == 1
    token_req = server.requests[0]
    assert token_req.path == "/oauth/token" and token_req.authorization.startswith("Basic ")


def test_401_renews_once_and_repeats_once(server):
    path = f"/api/v2/predictive-engagement/campaigns/{CID}"
    err = {"message": "invalid bearer token", "code": "bad.credentials", "status": 401, "contextId": "c1"}
    server.script(path, Canned(401, err), Canned(200, {"id": CID, "status": "active"}))
    with make_client(server) as client:
        assert client.get_campaign(CID)["id"] == CID
        assert client.stats.token_requests == 2
    # Persistent 401: one renewal, one repeat, then a clear error.
    server.script(path, Canned(401, err), Canned(401, err), default=Canned(200, {"id": CID, "status": "active"}))
    with make_client(server) as client, pytest.raises(AuthenticationError, match="401 again") as info:
        client.get_campaign(CID)
    assert client.stats.token_requests == 2 and client.stats.requests == 2
    assert "tok-SECRET" not in str(info.value)


# -- errors and retries ----------------------------------------------------------------------------
def test_error_message_has_endpoint_status_context_and_no_token(server):
    path = f"/api/v2/predictive-engagement/campaigns/{CID}"
    server.script(
        path,
        Canned(
            403,
            {
                "message": "missing scope",
                "code": "missing.any.permissions",
                "status": 403,
                "contextId": "ctx-403",
            },
        ),
    )
    with make_client(server) as client, pytest.raises(ApiError) as info:
        client.get_campaign(CID)
    text = str(info.value)
    assert f"GET {path}" in text and "HTTP 403" in text and "ctx-403" in text
    assert "tok-SECRET" not in text and SECRET not in text and not info.value.retryable
    assert len(server.api_requests()) == 1  # 403 is not retried


def test_404_not_retried(server):
    with make_client(server) as client, pytest.raises(NotFoundError, match="ctx-404"):
        client.get_campaign(CID)
    assert len(server.api_requests()) == 1


def test_5xx_retried_then_bounded(server):
    path = f"/api/v2/predictive-engagement/campaigns/{CID}"
    boom = Canned(502, b"<html>bad gateway</html>", {"Content-Type": "text/html", "ININ-Correlation-Id": "ctx-5"})
    server.script(path, boom, boom, Canned(200, {"id": CID, "status": "active"}))
    with make_client(server) as client:
        assert client.get_campaign(CID)["status"] == "active"
        assert client.stats.retries == 2
    server.script(path, default=boom)
    with make_client(server, max_attempts=3) as client, pytest.raises(ServerError, match="ctx-5") as info:
        client.get_campaign(CID)
    assert info.value.retryable and client.stats.requests == 3


def test_retry_after_above_cap_fails_fast(server):
    path = f"/api/v2/predictive-engagement/campaigns/{CID}"
    server.script(
        path,
        default=Canned(
            429,
            {"message": "slow down", "code": "too.many.requests", "status": 429, "contextId": "ctx-429"},
            {"Retry-After": "7200"},
        ),
    )
    slept: list[float] = []
    with make_client(server, max_retry_after_seconds=60, sleep=slept.append) as client:
        with pytest.raises(RetryAfterTooLong, match="ctx-429") as info:
            client.get_campaign(CID)
        assert not slept  # failed at once: no wait, no retry
        assert info.value.retryable and info.value.retry_after == 7200
        # Nothing was parked: a later call asks the server again (once) and fails fast again.
        with pytest.raises(RetryAfterTooLong):
            client.get_campaign(CID)
    assert len(server.api_requests()) == 2


# -- budget and map, no server -------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def budget_store(request, tmp_path):
    """The same contract on both stores: ``make(clock)`` -> a SQLite path or a PostgreSQL store
    (a fresh schema of the session's server, its database clock replaced by ``clock``)."""

    def make(clock):
        if request.param == "sqlite":
            return tmp_path / "b.sqlite"
        from pe_assets_tests.test_budget_postgres import fake_clock_store

        return fake_clock_store(request.getfixturevalue("postgres"), clock)

    return make


def test_budget_sliding_log_counts_from_the_answer(budget_store):
    from pe_assets.client import RateBudget, budget_key
    from pe_assets.client.budget import Grant, Wait

    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    budget = RateBudget(budget_store(clock), cap=2, window=10.0, clock=clock, inflight_deadline=99)
    a, b = budget_key("client-a"), budget_key("client-b")
    assert "client-a" not in a
    g1, g2 = budget.try_acquire([a]), budget.try_acquire([a])
    assert isinstance(g1, Grant) and isinstance(g2, Grant)
    wait = budget.try_acquire([a])
    assert isinstance(wait, Wait) and wait.seconds == 10.0  # both still in flight
    now[0] = 1001.0
    budget.release(g1)
    now[0] = 1003.0
    budget.release(g2)
    wait = budget.try_acquire([a])
    assert isinstance(wait, Wait) and wait.seconds == pytest.approx(8.0)  # g1 answered at 1001
    now[0] = 1011.0
    assert isinstance(budget.try_acquire([a]), Grant)
    # Spread: the key with the most budget left wins; a held key is skipped.
    assert budget.try_acquire([a, b]).key == b
    budget.hold(b, 5.0)
    wait = budget.try_acquire([a, b])
    assert isinstance(wait, Wait) and wait.hold_seconds == 0.0  # a is full, b is held
    budget.close()


def test_map_keeps_order_and_reraises_first_error():
    with PredictiveEngagementClient(
        "https://api.example.com", "https://login.example.com", [OAuthCredentials("c", "s")], max_concurrency=4
    ) as client:
        assert client.map(lambda x: x * 2, range(20)) == [x * 2 for x in range(20)]

        def boom(x: int) -> int:
            if x in (5, 9):
                raise ValueError(f"item {x}")
            return x

        with pytest.raises(ValueError, match="item 5"):
            client.map(boom, range(20))
        # Nested map runs inline instead of deadlocking the pool.
        assert client.map(lambda x: sum(client.map(lambda y: y, range(x))), range(5)) == [0, 0, 1, 3, 6]
