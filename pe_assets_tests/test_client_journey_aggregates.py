"""JourneyAggregatesClient against a scripted loopback server (real sockets, real httpx, no mocks).

Time is fake: ``FakeTime`` is both the client's clock and its sleep, so polling backoffs, job
deadlines, Retry-After and rate-limit holds are asserted as recorded sleeps, never waited for.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from pe_assets.client import (
    ACTION_MAPS_PERMISSION,
    AGGREGATES_PERMISSION,
    FUNNEL_METRICS,
    AsyncJobError,
    ClientConfigError,
    JourneyAggregatesClient,
    OAuthCredentials,
    PaginationError,
    PayloadError,
    PermissionDeniedError,
    QueryCancelledError,
    build_aggregate_query,
    chunk_days,
    format_interval,
    funnel_counts,
    schema_drift,
)
from pe_assets_tests.scripted_server import Canned, ScriptedServer, Seen

QUERY = "/api/v2/analytics/journeys/aggregates/query"
JOBS = "/api/v2/analytics/journeys/aggregates/jobs"
MAPS = "/api/v2/journey/actionmaps"
SECRET = "s3cr3t-VALUE-never-shown"
MAP_A, MAP_B = "3f6b0a8e-5c1d-4e7a-9b2f-8d0c6a41e9b7", "9d2c41f0-7a55-4c3b-8e61-2f4b0c9d7a13"
D1 = date(2026, 6, 1)


class FakeTime:
    """Clock and sleep in one: sleeping advances the clock at once and is recorded."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []
        self.on_sleep: Any = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.slept))


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def make_client(srv: ScriptedServer, fake_time: FakeTime, **kw: Any) -> JourneyAggregatesClient:
    kw.setdefault("requests_per_minute", 1000)
    kw.setdefault("backoff_seconds", 0.01)
    return JourneyAggregatesClient(
        srv.url, srv.url, [OAuthCredentials("cid-1", SECRET)], clock=fake_time.clock, sleep=fake_time.sleep, **kw
    )


def iso(day: date) -> str:
    return f"{day.isoformat()}T00:00:00.000Z"


def bucket(day: date, **counts: Any) -> dict[str, Any]:
    return {
        "interval": f"{iso(day)}/{iso(day + timedelta(days=1))}",
        "metrics": [{"metric": name, "stats": {"count": value}} for name, value in counts.items()],
    }


def group(map_id: str, *buckets: dict[str, Any]) -> dict[str, Any]:
    return {"group": {"journeyActionMapId": map_id}, "data": list(buckets)}


def day_answer(day: date = D1, **counts: Any) -> dict[str, Any]:
    return {"results": [group(MAP_A, bucket(day, **(counts or {"nWebActionsQualified": 10})))]}


def echo_query(seen: Seen) -> Canned:
    """A sync answer with one bucket per asked day (qualified = day of month) for MAP_A."""
    start, end = (datetime.fromisoformat(p) for p in seen.json()["interval"].split("/"))
    days = [(start + timedelta(days=i)).date() for i in range((end - start).days)]
    return Canned(
        200,
        {"results": [group(MAP_A, *(bucket(d, nWebActionsQualified=d.day) for d in days))]},
        {"ININ-Correlation-Id": f"corr-{start.date()}"},
    )


def listing_page(number: int, count: int, ids: list[str], next_uri: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {
        "entities": [{"id": i, "displayName": f"map {i}", "isActive": True, "newField": 1} for i in ids],
        "pageSize": 100,
        "pageNumber": number,
        "total": 250,
        "pageCount": count,
        "selfUri": f"{MAPS}?pageSize=100&pageNumber={number}",
    }
    if next_uri is not None:
        page["nextUri"] = next_uri
    return page


def job_status(state: str, **extra: Any) -> Canned:
    return Canned(200, {"state": state, "submissionDate": "2026-06-04T03:00:00.000Z", **extra})


def script_job(srv: ScriptedServer, job_id: str, *states: str, pages: list[dict[str, Any]] | None = None) -> None:
    srv.script(f"{JOBS}/{job_id}", *(job_status(s) for s in states), method="GET")
    srv.script(f"{JOBS}/{job_id}", default=Canned(204, b""), method="DELETE")
    srv.script(f"{JOBS}/{job_id}/results", *(Canned(200, p) for p in pages or []))


def calls(srv: ScriptedServer, method: str, path: str) -> list[Seen]:
    return [r for r in srv.api_requests() if r.method == method and r.path == path]


# -- pure helpers ---------------------------------------------------------------------------------
def test_chunk_days_never_one_query_per_day():
    chunks = chunk_days(D1, D1 + timedelta(days=40))
    assert chunks == [(D1, D1 + timedelta(days=31)), (D1 + timedelta(days=31), D1 + timedelta(days=40))]
    assert chunk_days(D1, D1 + timedelta(days=31)) == [(D1, D1 + timedelta(days=31))]
    assert chunk_days(D1, D1 + timedelta(days=1)) == [(D1, D1 + timedelta(days=1))]
    with pytest.raises(ClientConfigError, match="empty range"):
        chunk_days(D1, D1)


def test_interval_format_and_query_body():
    assert format_interval(D1, date(2026, 6, 3)) == "2026-06-01T00:00:00.000Z/2026-06-03T00:00:00.000Z"
    body = build_aggregate_query(D1, date(2026, 6, 2))
    assert body == {
        "interval": "2026-06-01T00:00:00.000Z/2026-06-02T00:00:00.000Z",
        "granularity": "P1D",
        "timeZone": "UTC",
        "groupBy": ["journeyActionMapId"],
        "metrics": list(FUNNEL_METRICS),
    }
    assert len(FUNNEL_METRICS) == 11 and FUNNEL_METRICS[:5] == (
        "nWebActionsQualified",
        "nWebActionsOffered",
        "nWebActionsAccepted",
        "nWebActionsStarted",
        "nWebActionsEngaged",
    )


def test_absent_metric_is_zero_only_within_present_group_and_bucket():
    answer = {
        "results": [
            group(MAP_A, bucket(D1, nWebActionsQualified=1840, nWebActionsOffered=1214)),
            group(MAP_B),  # a group without buckets: no rows invented
        ]
    }
    counts = funnel_counts([answer], D1, D1 + timedelta(days=2))
    assert list(counts) == [(MAP_A, D1)]
    assert counts[(MAP_A, D1)]["nWebActionsOffered"] == 1214
    assert counts[(MAP_A, D1)]["nWebActionsErrored"] == 0
    assert list(counts[(MAP_A, D1)]) == list(FUNNEL_METRICS)
    assert funnel_counts([{}], D1, D1 + timedelta(days=1)) == {}


def test_unknown_metrics_dimensions_and_fields_are_drift_not_errors():
    answer = day_answer(nWebActionsQualified=5, nBrandNewMetric="x", nWebActionsFrequencyCapReached=2)
    answer["results"][0]["group"]["journeyActionMediaType"] = "webMessagingOffer"
    answer["results"][0]["data"][0]["metrics"][0]["stats"]["p50"] = 3
    answer["totalHits"] = 1
    counts = funnel_counts([answer], D1, D1 + timedelta(days=1))
    assert counts[(MAP_A, D1)]["nWebActionsQualified"] == 5
    drift = schema_drift([answer])
    assert drift.unknown_metrics == ("nBrandNewMetric",)
    assert drift.unrequested_metrics == ("nWebActionsFrequencyCapReached",)
    assert drift.unknown_dimensions == ("journeyActionMediaType",)
    assert drift.unknown_fields == ("results[].data[].metrics[].stats.p50", "totalHits")
    assert not schema_drift([day_answer()])


# -- sync query -----------------------------------------------------------------------------------
def test_40_days_are_two_queries_and_raw_answers_come_back_unchanged(server, fake_time):
    server.script(QUERY, default=echo_query)
    start, end = D1, D1 + timedelta(days=40)
    with make_client(server, fake_time) as client:
        chunks = client.query_funnel(start, end)
        assert client.stats.requests == 2
    posts = calls(server, "POST", QUERY)
    assert [p.json()["interval"] for p in posts] == [
        "2026-06-01T00:00:00.000Z/2026-07-02T00:00:00.000Z",
        "2026-07-02T00:00:00.000Z/2026-07-11T00:00:00.000Z",
    ]
    assert all(p.json()["groupBy"] == ["journeyActionMapId"] and p.json()["granularity"] == "P1D" for p in posts)
    assert all(p.json()["metrics"] == list(FUNNEL_METRICS) for p in posts)
    assert [c.interval for c in chunks] == [p.json()["interval"] for p in posts]
    assert [(c.start, c.end, c.mode) for c in chunks] == [
        (D1, date(2026, 7, 2), "sync"),
        (date(2026, 7, 2), date(2026, 7, 11), "sync"),
    ]
    # The raw JSON as served (the caller lands it), and the correlation id kept.
    assert chunks[0].responses == (echo_query(posts[0]).body,)
    assert chunks[0].correlation_ids == ("corr-2026-06-01",)
    days = sorted(day for c in chunks for (_, day) in c.counts)
    assert days == [start + timedelta(days=i) for i in range(40)]
    assert chunks[1].counts[(MAP_A, date(2026, 7, 5))]["nWebActionsQualified"] == 5


def test_dagster_time_window_datetimes_accepted(server, fake_time):
    server.script(QUERY, default=echo_query)
    with make_client(server, fake_time) as client:
        chunks = client.query_funnel(datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC))
        assert chunks[0].interval == "2026-06-01T00:00:00.000Z/2026-06-02T00:00:00.000Z"
        with pytest.raises(ClientConfigError, match="midnight"):
            client.query_funnel(datetime(2026, 6, 1, 5, tzinfo=UTC), date(2026, 6, 2))


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (day_answer(nWebActionsQualified="12"), "stats.count is '12'"),
        (day_answer(nWebActionsOffered=None), "stats.count is None"),
        (day_answer(nWebActionsOffered=True), "stats.count is True"),
        (day_answer(nWebActionsOffered=1.5), "not a whole non-negative number"),
        (day_answer(nWebActionsOffered=-3), "not a whole non-negative number"),
        (day_answer(day=D1 + timedelta(days=1)), "outside the asked interval"),
        (day_answer(day=D1 - timedelta(days=1)), "outside the asked interval"),
        ({"results": [{"group": {"journeyActionMediaType": "x"}, "data": [bucket(D1)]}]}, "no journeyActionMapId"),
        ({"results": [{"data": [bucket(D1)]}]}, "no journeyActionMapId"),
        ({"results": {"a": 1}}, "results is not a list"),
        (
            {
                "results": [
                    group(MAP_A, {**bucket(D1), "interval": "2026-06-01T00:00:00.000Z/2026-06-01T12:00:00.000Z"})
                ]
            },
            "not one whole UTC day",
        ),
        ({"results": [group(MAP_A, {**bucket(D1), "interval": "yesterday"})]}, "not an ISO start/end"),
        ({"results": [group(MAP_A, bucket(D1)), group(MAP_A, bucket(D1))]}, "appears twice"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_malformed_answer_is_a_clear_non_retryable_error(server, fake_time, answer, match):
    server.script(QUERY, Canned(200, answer))
    with make_client(server, fake_time) as client, pytest.raises(PayloadError, match=match) as info:
        client.query_funnel(D1, D1 + timedelta(days=1))
    assert not info.value.retryable and f"POST {QUERY}" in str(info.value)
    assert len(server.api_requests()) == 1


def test_403_names_the_missing_permission_and_is_not_retried(server, fake_time):
    body = {
        "message": "Unable to perform the requested action. You must have at least one of the following "
        "permissions assigned: [analytics:journeyAggregate:view]",
        "code": "missing.any.permissions",
        "status": 403,
        "contextId": "ctx-403",
        "details": [],
        "errors": [],
    }
    server.script(QUERY, default=Canned(403, body))
    with make_client(server, fake_time) as client, pytest.raises(PermissionDeniedError) as info:
        client.query_funnel(D1, D1 + timedelta(days=40))
    err = info.value
    assert not err.retryable and err.status == 403 and err.context_id == "ctx-403"
    assert err.missing_permissions == (AGGREGATES_PERMISSION,) and AGGREGATES_PERMISSION in str(err)
    assert "tok-SECRET" not in str(err) and SECRET not in str(err)
    assert len(server.api_requests()) == 1 and fake_time.slept == []  # immediate: no retry, no wait


def test_403_without_a_named_permission_names_the_endpoints(server, fake_time):
    server.script(MAPS, default=Canned(403, {"message": "Forbidden", "code": "missing.any.permissions", "status": 403}))
    with make_client(server, fake_time) as client, pytest.raises(PermissionDeniedError, match=ACTION_MAPS_PERMISSION):
        client.list_action_maps()
    assert len(server.api_requests()) == 1


def test_429_waits_retry_after_once_with_no_extra_request(server, fake_time):
    too_many = Canned(
        429,
        {
            "message": "Rate limit exceeded the maximum. Retry the request in [42] seconds",
            "code": "too.many.requests.retry.after",
            "status": 429,
            "contextId": "ctx-429",
            "details": [],
            "errors": [],
        },
        {"Retry-After": "42", "inin-ratelimit-count": "300", "inin-ratelimit-allowed": "300"},
    )
    server.script(QUERY, too_many, default=echo_query)
    with make_client(server, fake_time) as client:
        chunks = client.query_funnel(D1, D1 + timedelta(days=1))
        stats = client.stats
    assert chunks[0].counts[(MAP_A, D1)]["nWebActionsQualified"] == 1
    assert stats.requests == 2 and stats.rate_limited_429s == 1 and stats.retries == 1
    assert 42 <= sum(fake_time.slept) < 45  # the server's wait (plus jitter), not a backoff guess


def test_inin_headers_saying_window_used_up_hold_the_next_request(server, fake_time):
    """A 200 with count >= allowed: the client waits inin-ratelimit-reset SECONDS, sends no 429-bound request."""
    exhausted = {"inin-ratelimit-count": "300", "inin-ratelimit-allowed": "300", "inin-ratelimit-reset": "7"}
    server.script(
        MAPS,
        Canned(200, listing_page(1, 2, ["m1"], f"{MAPS}?pageSize=100&pageNumber=2"), exhausted),
        Canned(200, listing_page(2, 2, ["m2"]), {"inin-ratelimit-count": "1", "inin-ratelimit-allowed": "300"}),
    )
    with make_client(server, fake_time) as client:
        assert [m["id"] for m in client.list_action_maps()] == ["m1", "m2"]
        stats = client.stats
    assert stats.requests == 2 and stats.rate_limited_429s == 0 and stats.retries == 0
    assert 7 <= sum(fake_time.slept) < 8  # seconds until reset, not an epoch
    assert stats.budget_wait_seconds == pytest.approx(sum(fake_time.slept))


# -- action-map listing ---------------------------------------------------------------------------
def test_listing_follows_relative_next_uri_to_page_count(server, fake_time):
    server.script(
        MAPS,
        Canned(200, listing_page(1, 3, ["m1", "m2"], f"{MAPS}?pageSize=100&pageNumber=2")),
        Canned(200, listing_page(2, 3, ["m3"], f"{MAPS}?pageSize=100&pageNumber=3")),
        Canned(200, listing_page(3, 3, ["m4"])),
    )
    with make_client(server, fake_time) as client:
        pages = client.list_action_map_pages()
    assert [e["id"] for p in pages for e in p["entities"]] == ["m1", "m2", "m3", "m4"]
    assert pages[0]["entities"][0]["newField"] == 1  # served unchanged
    queries = [r.query for r in server.api_requests()]
    assert queries == ["pageSize=100&pageNumber=1", "pageSize=100&pageNumber=2", "pageSize=100&pageNumber=3"]


def test_listing_without_next_uri_asks_the_next_page_number(server, fake_time):
    server.script(MAPS, Canned(200, listing_page(1, 2, ["m1"])), Canned(200, listing_page(2, 2, ["m2"])))
    with make_client(server, fake_time) as client:
        assert [m["id"] for m in client.list_action_maps()] == ["m1", "m2"]
    assert server.api_requests()[1].query == "pageSize=100&pageNumber=2"


@pytest.mark.parametrize(
    ("second", "match"),
    [
        (listing_page(1, 3, ["m1"], f"{MAPS}?pageSize=100&pageNumber=2"), "page number repeats"),
        (listing_page(3, 3, ["m3"]), "skips ahead"),
        (listing_page(2, 40, ["m2"], f"{MAPS}?pageSize=100&pageNumber=3"), "pageCount moved from 3 to 40"),
    ],
)
def test_listing_loops_are_pagination_errors(server, fake_time, second, match):
    server.script(
        MAPS, Canned(200, listing_page(1, 3, ["m1"], f"{MAPS}?pageSize=100&pageNumber=2")), default=Canned(200, second)
    )
    with make_client(server, fake_time) as client, pytest.raises(PaginationError, match=match):
        client.list_action_maps()
    assert len(server.api_requests()) == 2


def test_listing_next_uri_to_another_host_is_refused(server, fake_time):
    with ScriptedServer() as foreign:
        server.script(MAPS, Canned(200, listing_page(1, 2, ["m1"], f"{foreign.url}{MAPS}?pageNumber=2")))
        with make_client(server, fake_time) as client, pytest.raises(PaginationError, match="outside"):
            client.list_action_maps()
        assert foreign.requests == []


# -- async jobs -----------------------------------------------------------------------------------
def async_pages() -> list[dict[str, Any]]:
    return [
        {"results": [group(MAP_A, bucket(D1, nWebActionsQualified=1840, nWebActionsOffered=1214))], "cursor": "c-1"},
        {"results": [group(MAP_B, bucket(D1, nWebActionsQualified=37))]},
    ]


def test_413_moves_the_chunk_to_an_async_job(server, fake_time):
    too_large = Canned(413, {"message": "result too large", "code": "request.too.large", "status": 413})
    server.script(QUERY, too_large)
    server.script(JOBS, Canned(202, {"jobId": "job-1"}), method="POST")
    script_job(server, "job-1", "QUEUED", "PENDING", "PENDING", "FULFILLED", pages=async_pages())
    with make_client(server, fake_time) as client:
        [chunk] = client.query_funnel(D1, D1 + timedelta(days=1))
    assert chunk.mode == "async" and chunk.job_id == "job-1"
    assert chunk.responses == tuple(async_pages())  # every results page, unchanged
    assert chunk.counts[(MAP_A, D1)]["nWebActionsOffered"] == 1214 and chunk.counts[(MAP_B, D1)]["nWebActionsQualified"]
    [submitted] = calls(server, "POST", JOBS)
    assert submitted.json() == {**build_aggregate_query(D1, D1 + timedelta(days=1)), "pageSize": 100}
    results = calls(server, "GET", f"{JOBS}/job-1/results")
    assert [r.query for r in results] == ["", "cursor=c-1"]
    assert fake_time.slept == [3.0, 4.5, 6.75]  # backoff x1.5 between polls
    assert calls(server, "DELETE", f"{JOBS}/job-1") == []  # a finished job is left to expire
    assert len(calls(server, "POST", QUERY)) == 1  # the 413 is not retried


def test_long_range_goes_async_directly(server, fake_time):
    server.script(JOBS, Canned(202, {"jobId": "j1"}), Canned(202, {"jobId": "j2"}), method="POST")
    script_job(server, "j1", "FULFILLED", pages=[day_answer()])
    script_job(server, "j2", "FULFILLED", pages=[{}])
    with make_client(server, fake_time, async_above_days=31) as client:
        chunks = client.query_funnel(D1, D1 + timedelta(days=40))
    assert [c.mode for c in chunks] == ["async", "async"] and calls(server, "POST", QUERY) == []


@pytest.mark.parametrize("dead_state", ["FAILED", "EXPIRED"])
def test_failed_or_expired_job_is_resubmitted_once(server, fake_time, dead_state):
    server.script(JOBS, Canned(202, {"jobId": "j1"}), Canned(202, {"jobId": "j2"}), method="POST")
    server.script(f"{JOBS}/j1", job_status(dead_state, errorMessage="query execution failed"), method="GET")
    script_job(server, "j2", "FULFILLED", pages=[day_answer()])
    with make_client(server, fake_time) as client:
        chunk = client.query_chunk(D1, D1 + timedelta(days=1), mode="async")
    assert chunk.job_id == "j2" and len(calls(server, "POST", JOBS)) == 2


@pytest.mark.parametrize(("dead_state", "retryable"), [("FAILED", False), ("EXPIRED", True)])
def test_job_dead_twice_is_an_async_job_error(server, fake_time, dead_state, retryable):
    server.script(
        JOBS, Canned(202, {"jobId": "j1"}), Canned(202, {"jobId": "j2"}), default=Canned(202, {"jobId": "jx"})
    )
    for job in ("j1", "j2"):
        server.script(f"{JOBS}/{job}", job_status(dead_state, errorMessage="boom"), method="GET")
    with make_client(server, fake_time) as client, pytest.raises(AsyncJobError, match=dead_state) as info:
        client.query_chunk(D1, D1 + timedelta(days=1), mode="async")
    assert info.value.retryable is retryable and info.value.job_id == "j2"
    assert len(calls(server, "POST", JOBS)) == 2  # once resubmitted, never a third time


def test_repeating_cursor_is_an_error_and_deletes_the_job(server, fake_time):
    server.script(JOBS, Canned(202, {"jobId": "j1"}), method="POST")
    page = {"results": [group(MAP_A, bucket(D1, nWebActionsQualified=1))], "cursor": "same"}
    script_job(server, "j1", "FULFILLED", pages=[page, {**page, "results": []}, page])
    with make_client(server, fake_time) as client, pytest.raises(PaginationError, match="cursor repeats"):
        client.query_chunk(D1, D1 + timedelta(days=1), mode="async")
    assert [r.query for r in calls(server, "GET", f"{JOBS}/j1/results")] == ["", "cursor=same"]
    assert len(calls(server, "DELETE", f"{JOBS}/j1")) == 1


def test_cancel_hook_deletes_the_job(server, fake_time):
    server.script(JOBS, Canned(202, {"jobId": "j1"}), method="POST")
    script_job(server, "j1")
    server.script(f"{JOBS}/j1", default=job_status("PENDING"), method="GET")
    with make_client(server, fake_time) as client, pytest.raises(QueryCancelledError, match="j1"):
        client.query_chunk(D1, D1 + timedelta(days=1), mode="async", cancel=lambda: len(fake_time.slept) >= 2)
    assert len(calls(server, "DELETE", f"{JOBS}/j1")) == 1
    assert len(calls(server, "GET", f"{JOBS}/j1")) == 3


def test_keyboard_interrupt_while_polling_deletes_the_job(server, fake_time):
    server.script(JOBS, Canned(202, {"jobId": "j1"}), method="POST")
    script_job(server, "j1")
    server.script(f"{JOBS}/j1", default=job_status("QUEUED"), method="GET")

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    fake_time.on_sleep = interrupt
    with make_client(server, fake_time) as client, pytest.raises(KeyboardInterrupt):
        client.query_chunk(D1, D1 + timedelta(days=1), mode="async")
    deletes = calls(server, "DELETE", f"{JOBS}/j1")
    assert len(deletes) == 1 and deletes[0].authorization == "Bearer tok-SECRET-abc"


def test_job_past_its_deadline_is_deleted_and_retryable(server, fake_time):
    server.script(JOBS, Canned(202, {"jobId": "j1"}), method="POST")
    script_job(server, "j1")
    server.script(f"{JOBS}/j1", default=job_status("PENDING"), method="GET")
    with (
        make_client(server, fake_time, job_deadline_seconds=60) as client,
        pytest.raises(AsyncJobError, match="still PENDING") as info,
    ):
        client.query_chunk(D1, D1 + timedelta(days=1), mode="async")
    assert info.value.retryable and sum(fake_time.slept) == pytest.approx(60)
    assert len(calls(server, "DELETE", f"{JOBS}/j1")) == 1


def test_malformed_async_page_is_an_error_and_deletes_the_job(server, fake_time):
    server.script(JOBS, Canned(202, {"jobId": "j1"}), method="POST")
    bad = {"results": [group(MAP_A, bucket(D1, nWebActionsQualified="many"))]}
    script_job(server, "j1", "FULFILLED", pages=[bad])
    with make_client(server, fake_time) as client, pytest.raises(PayloadError, match="'many'"):
        client.query_chunk(D1, D1 + timedelta(days=1), mode="async")
    assert len(calls(server, "DELETE", f"{JOBS}/j1")) == 1


# -- configuration and secrets --------------------------------------------------------------------
def test_no_scope_requested_and_write_scopes_refused(server, fake_time):
    server.script(QUERY, default=echo_query)
    with make_client(server, fake_time) as client:
        client.query_funnel(D1, D1 + timedelta(days=1))
    token_request = next(r for r in server.requests if r.path == "/oauth/token")
    assert token_request.body == b"grant_type=client_credentials"  # roles authorize, not scopes
    with pytest.raises(ClientConfigError, match="write scope"):
        JourneyAggregatesClient(
            "https://api.example.com",
            "https://login.example.com",
            [OAuthCredentials("c", "s")],
            scopes=["journey:actionmap:edit"],
        )


def test_secret_never_in_repr_errors_or_chunks(server, fake_time):
    server.script(QUERY, default=echo_query)
    with make_client(server, fake_time) as client:
        assert SECRET not in repr(client) and "JourneyAggregatesClient" in repr(client)
        [chunk] = client.query_funnel(D1, D1 + timedelta(days=1))
    text = repr(chunk) + json.dumps(chunk.query)
    assert SECRET not in text and "tok-SECRET" not in text
