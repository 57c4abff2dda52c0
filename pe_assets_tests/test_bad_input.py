"""Bad-input matrix: one row per way the API (or the settings) can be wrong.

Payload rows run the real client and the real asset graph against a tampering proxy: a tiny
loopback server in front of the simulator (the approach of ``test_client_scripted.py``) that
forwards every request and, for the one request a row targets, serves a bad answer instead (or
the real answer damaged). No mocks. Each pipeline row first has a good day (DAY1) loaded, then
materializes DAY2 through the proxy, and asserts:

* the outcome: a failed run whose error names the problem, or a quarantined step in
  ``rejected_journey_step`` with its reason, or (accepted input) a successful load;
* nothing already loaded is lost: every DAY1 row of every table is still there, unchanged.

Two rows run at client level (``max_pages`` must be small to stay quick; a 429 without
Retry-After). Settings rows call ``Settings.from_env`` and expect a ``SettingsError`` naming the
variable.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import httpx
import pytest

from pe_assets.client import OAuthCredentials, PaginationError, PredictiveEngagementClient
from pe_assets.config import Settings, SettingsError
from pe_assets.defs.common.resources import OAuthClientConfig, PredictiveEngagementResource
from pe_dev.chaos import (
    FIRST_DAY,
    NOW,
    failure_messages,
    materialize,
    resources_for,
    snapshot,
    start_simulator,
)
from pe_dev.simulator import SimulatorServer

DAY1, DAY2 = FIRST_DAY, FIRST_DAY + timedelta(days=1)
API = "/api/v2/predictive-engagement"

#: (status, headers, body) or None to forward unchanged. Arguments: path, query, upstream fetch.
Upstream = tuple[int, dict[str, str], bytes]
Rule = Callable[[str, dict[str, list[str]], Callable[[], Upstream]], Upstream | None]


class TamperingProxy:
    """Forward everything to ``upstream``; ``rule`` may replace any answer."""

    def __init__(self, upstream: str, rule: Rule) -> None:
        self.upstream, self.rule, self.hits = upstream, rule, 0
        self._http = httpx.Client(timeout=30)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _go(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urlsplit(self.path)

                def fetch() -> Upstream:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    r = outer._http.request(self.command, outer.upstream + self.path, headers=headers, content=body)
                    keep = {k: v for k, v in r.headers.items() if k.lower() not in ("content-length", "connection")}
                    return r.status_code, keep, r.content

                answer = outer.rule(parts.path, parse_qs(parts.query), fetch)
                if answer is None:
                    answer = fetch()
                else:
                    outer.hits += 1
                status, headers, data = answer
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _go

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> TamperingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()


# -- rules ---------------------------------------------------------------------------------------
def _is_day2_journey(path: str, query: dict[str, list[str]], campaign: str | None = None) -> bool:
    if not (path.startswith(f"{API}/campaigns/") and path.endswith("/analytics")):
        return False
    if campaign is not None and f"/campaigns/{campaign}/" not in path:
        return False
    return "cursor" in query or query.get("dateFrom", [""])[0].startswith(DAY2.isoformat())


def journey_page(campaign_role: str, make: Callable[[dict[str, Any], bytes], Upstream | bytes | dict]) -> Callable:
    """A rule factory: the *first* DAY2 journey page of the campaign with ``campaign_role`` is
    replaced by ``make(page_json, raw_bytes)`` (a dict is re-encoded, NaN allowed)."""

    def bind(sim: SimulatorServer) -> Rule:
        campaign = sim.roles[campaign_role]

        def rule(path: str, query: dict[str, list[str]], fetch: Callable[[], Upstream]) -> Upstream | None:
            if not _is_day2_journey(path, query, campaign) or "cursor" in query:
                return None
            status, headers, raw = fetch()
            out = make(json.loads(raw), raw)
            if isinstance(out, tuple):
                return out
            return status, headers, out if isinstance(out, bytes) else json.dumps(out).encode()

        return rule

    return bind


def step_edit(fn: Callable[[list[dict[str, Any]]], None]) -> Callable[[dict[str, Any], bytes], dict]:
    def make(page: dict[str, Any], raw: bytes) -> dict:
        fn(page["steps"])
        return page

    return make


def listing_edit(fn: Callable[[dict[str, Any]], None]) -> Callable:
    def bind(sim: SimulatorServer) -> Rule:
        def rule(path: str, query: dict[str, list[str]], fetch: Callable[[], Upstream]) -> Upstream | None:
            if path != f"{API}/campaigns":
                return None
            status, headers, raw = fetch()
            page = json.loads(raw)
            fn(page)
            return status, headers, json.dumps(page).encode()

        return rule

    return bind


def token_edit(fn: Callable[[dict[str, Any]], None]) -> Callable:
    def bind(sim: SimulatorServer) -> Rule:
        def rule(path: str, query: dict[str, list[str]], fetch: Callable[[], Upstream]) -> Upstream | None:
            if path != "/oauth/token":
                return None
            status, headers, raw = fetch()
            body = json.loads(raw)
            fn(body)
            return status, headers, json.dumps(body).encode()

        return rule

    return bind


def _set(step: int, **fields: Any) -> Callable[[list[dict[str, Any]]], None]:
    def fn(steps: list[dict[str, Any]]) -> None:
        steps[step].update(fields)

    return fn


def _self_loop(page: dict[str, Any], raw: bytes) -> dict:
    page["nextPageUri"] = f"{API}/campaigns/{page['campaignId']}/analytics?cursor=loop"
    return page


def _loop_rule(sim: SimulatorServer) -> Rule:
    """The first page points to ``cursor=loop``, which answers that same page (pointing to itself)."""
    cache: dict[str, Upstream] = {}
    first = journey_page("big", _self_loop)(sim)

    def rule(path: str, query: dict[str, list[str]], fetch: Callable[[], Upstream]) -> Upstream | None:
        if query.get("cursor") == ["loop"]:
            return cache["page"]
        answer = first(path, query, fetch)
        if answer is not None:
            cache["page"] = answer
        return answer

    return rule


@dataclass(frozen=True)
class Case:
    """One row: how to damage the API, and what must happen ("error" text or "quarantine" reason)."""

    rule: Callable[[SimulatorServer], Rule]
    outcome: str  # "error", "quarantine" or "ok"
    match: str = ""


def _html(page: dict[str, Any], raw: bytes) -> Upstream:
    return 200, {"Content-Type": "text/html"}, b"<html><body>Service maintenance</body></html>"


CASES: list[Any] = [
    pytest.param(Case(journey_page("big", _html), "error", "body is not valid JSON"), id="html-body-with-200"),
    pytest.param(
        Case(journey_page("big", lambda p, raw: raw[: len(raw) // 2]), "error", "not valid JSON"), id="truncated-json"
    ),
    pytest.param(
        Case(journey_page("big", lambda p, raw: raw.replace(b'"steps"', b'"st\xffps"', 1)), "error", "not UTF-8"),
        id="non-utf8-body",
    ),
    pytest.param(
        Case(journey_page("big", step_edit(_set(3, conversionRate=float("nan")))), "error", "non-finite number NaN"),
        id="nan",
    ),
    pytest.param(
        Case(journey_page("big", step_edit(_set(3, contactCount="12"))), "quarantine", "contactCount is not a number"),
        id="wrong-type-count-as-text",
    ),
    pytest.param(
        Case(journey_page("big", step_edit(_set(3, stepName=42))), "quarantine", "stepName is not a string"),
        id="wrong-type-name-as-number",
    ),
    pytest.param(
        Case(journey_page("big", step_edit(_set(3, contactCount=-5))), "quarantine", "contactCount is negative"),
        id="negative-count",
    ),
    pytest.param(
        Case(
            journey_page("big", step_edit(_set(3, conversionRate=1.5))),
            "quarantine",
            "conversionRate 1.5 is outside [0, 1]",
        ),
        id="rate-above-1",
    ),
    pytest.param(
        Case(
            journey_page("big", step_edit(lambda s: s[4].update(stepId=s[3]["stepId"]))),
            "quarantine",
            "duplicate stepId",
        ),
        id="duplicate-step-ids",
    ),
    pytest.param(Case(journey_page("unscored", step_edit(lambda s: s.clear())), "ok"), id="empty-steps-list"),
    pytest.param(
        Case(
            journey_page("big", lambda p, raw: {k: v for k, v in p.items() if k != "metrics"}),
            "error",
            "no metrics object",
        ),
        id="missing-metrics",
    ),
    pytest.param(
        Case(journey_page("big", lambda p, raw: {**p, "dateFrom": f"{DAY1}T00:00:00Z"}), "error", "dateFrom is"),
        id="dateFrom-not-the-day-asked",
    ),
    pytest.param(Case(_loop_rule, "error", "nextPageUri repeats"), id="repeating-nextPageUri"),
    pytest.param(
        Case(journey_page("big", step_edit(_set(3, stepName="ü漢字\u2603 " * 20_000, exitReason="é" * 5000))), "ok"),
        id="very-long-non-ascii-strings",
    ),
    pytest.param(
        Case(listing_edit(lambda page: page["entities"][0].update(status="deleted")), "error", "status"),
        id="unknown-campaign-status",
    ),
    pytest.param(
        Case(token_edit(lambda body: body.pop("expires_in")), "error", "no positive expires_in"),
        id="token-without-expires_in",
    ),
]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    server = start_simulator(seed=71)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def good_day(sim: SimulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with DAY1 loaded cleanly (copied for each row)."""
    data = tmp_path_factory.mktemp("good")
    assert materialize(resources_for(sim, data), DAY1, DAY1).success
    return data


def _first_date(row: tuple) -> date | None:
    """The row's extraction_date: its first date value (snapshot() drops the earlier timestamps)."""
    for value in row:
        if isinstance(value, date):
            return value.date() if hasattr(value, "hour") else value
    return None


def _day1_rows(db: Path) -> dict[str, list[tuple]]:
    snap = snapshot(db)
    out: dict[str, list[tuple]] = {}
    for table, rows in snap.items():
        if table == "dim_predictive_campaign":
            out[table] = [r[:1] for r in rows]  # the campaign ids: none may disappear
        else:
            out[table] = [r for r in rows if _first_date(r) == DAY1]
    return out


@pytest.mark.parametrize("case", CASES)
def test_bad_payload(case: Case, sim, good_day, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(good_day, data)
    before = _day1_rows(data / "warehouse.duckdb")
    core = ("fact_journey_step", "rejected_journey_step", "fact_scorecard_performance", "fact_predictive_journey")
    assert all(before[t] for t in core), str({t: len(r) for t, r in before.items()})
    with TamperingProxy(sim.url, case.rule(sim)) as proxy:
        resources = resources_for(sim, data, now=NOW + timedelta(hours=1))  # newer than the good day
        api = resources["pe_api"]
        assert isinstance(api, PredictiveEngagementResource)
        resources["pe_api"] = PredictiveEngagementResource(
            api_url=proxy.url,
            login_url=proxy.url,
            oauth_clients=[OAuthClientConfig(client_id=sim.client_id, client_secret=sim.client_secret)],
            requests_per_minute=api.requests_per_minute,
            budget_path=api.budget_path,
            max_retry_after_seconds=api.max_retry_after_seconds,
        )
        result = materialize(resources, DAY2, DAY2, retry_delay=0.05)
        assert proxy.hits > 0, "the row's bad answer was never served"
    db = data / "warehouse.duckdb"
    if case.outcome == "error":
        assert not result.success
        errors = "\n".join(failure_messages(result))
        assert case.match in errors, errors[-2000:]
    else:
        assert result.success, failure_messages(result)
    if case.outcome == "quarantine":
        with duckdb.connect(str(db), read_only=True) as con:
            reasons = [
                r[0]
                for r in con.execute(
                    "SELECT reason FROM rejected_journey_step WHERE extraction_date = ? AND campaign_id = ?",
                    [DAY2, sim.roles["big"]],
                ).fetchall()
            ]
        assert any(case.match in r for r in reasons), reasons
    # Nothing already loaded is lost.
    after = _day1_rows(db)
    for table, rows in before.items():
        if table == "dim_predictive_campaign":
            assert set(rows) <= set(after[table]), table
        elif table in ("fact_scorecard_performance", "fact_scorecard_score_distribution"):
            assert set(rows) <= set(after[table]), table
        else:
            assert sorted(rows, key=repr) == sorted(after[table], key=repr), f"{table}: DAY1 rows changed"


def test_long_non_ascii_strings_round_trip_exactly(sim, good_day, tmp_path):
    """The very long non-ASCII step name of the matrix lands byte for byte (not truncated)."""
    name = "ü漢字\u2603 " * 20_000
    rule = journey_page("big", step_edit(_set(3, stepName=name)))(sim)
    data = tmp_path / "data"
    shutil.copytree(good_day, data)
    with TamperingProxy(sim.url, rule) as proxy:
        resources = resources_for(sim, data)
        resources["pe_api"] = PredictiveEngagementResource(
            api_url=proxy.url,
            login_url=proxy.url,
            oauth_clients=[OAuthClientConfig(client_id=sim.client_id, client_secret=sim.client_secret)],
            budget_path=str(data / "state" / "rate_budget.sqlite"),
            requests_per_minute=1000,
        )
        assert materialize(resources, DAY2, DAY2, selection="raw_campaign_journeys*").success
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        got = con.execute(
            "SELECT step_name FROM fact_journey_step "
            "WHERE extraction_date = ? AND campaign_id = ? AND step_sequence = 4",
            [DAY2, sim.roles["big"]],
        ).fetchone()
    assert got == (name,)


# -- client-level rows -------------------------------------------------------------------------------
def test_more_pages_than_any_real_day_is_bounded(sim):
    """Every page points to a fresh next page: the client stops at ``max_pages`` with a clear error."""
    counter = {"n": 0}

    def rule(path: str, query: dict[str, list[str]], fetch: Callable[[], Upstream]) -> Upstream | None:
        if not path.endswith("/analytics"):
            return None
        counter["n"] += 1
        cid = path.split("/")[-2]
        page = {
            "campaignId": cid,
            "dateFrom": f"{DAY2}T00:00:00Z",
            "dateTo": f"{DAY2 + timedelta(days=1)}T00:00:00Z",
            "metrics": {"totalContacts": 1, "totalConverted": 0, "overallConversionRate": 0.0},
            "steps": [],
            "nextPageUri": f"{path}?cursor=c{counter['n']}",
        }
        return 200, {}, json.dumps(page).encode()

    with (
        TamperingProxy(sim.url, rule) as proxy,
        PredictiveEngagementClient(
            proxy.url,
            proxy.url,
            [OAuthCredentials(sim.client_id, sim.client_secret)],
            max_pages=50,
            requests_per_minute=1000,
        ) as client,
    ):
        with pytest.raises(PaginationError, match="more than 50 pages"):
            client.get_campaign_journey_pages(sim.roles["big"], DAY2)
    assert counter["n"] == 50


def test_429_without_retry_after_backs_off_and_succeeds(sim):
    """A 429 with no Retry-After (and no rate headers): the client waits >= 1 s, retries, succeeds."""
    served = {"n": 0}

    def rule(path: str, query: dict[str, list[str]], fetch: Callable[[], Upstream]) -> Upstream | None:
        if path.endswith("/analytics") and served["n"] == 0:
            served["n"] += 1
            body = {"message": "slow down", "code": "too.many.requests", "status": 429, "contextId": "c-429"}
            return 429, {}, json.dumps(body).encode()
        return None

    with (
        TamperingProxy(sim.url, rule) as proxy,
        PredictiveEngagementClient(
            proxy.url, proxy.url, [OAuthCredentials(sim.client_id, sim.client_secret)], requests_per_minute=1000
        ) as client,
    ):
        pages = client.get_campaign_journey_pages(sim.roles["big"], DAY2)
        assert client.stats.rate_limited_429s == 1 and client.stats.retries == 1
    steps = [s for p in pages for s in p["steps"]]
    assert steps == sim.expected_steps(sim.roles["big"], DAY2)


# -- settings rows -----------------------------------------------------------------------------------
GOOD_ENV = {
    "GENESYSCLOUD_OAUTHCLIENT_ID": "id",
    "GENESYSCLOUD_OAUTHCLIENT_SECRET": "secret",
    "GENESYSCLOUD_REGION": "mypurecloud.com",
}


@pytest.mark.parametrize(
    ("change", "names"),
    [
        pytest.param({"GENESYSCLOUD_OAUTHCLIENT_ID": ""}, "GENESYSCLOUD_OAUTHCLIENT_ID", id="missing-client-id"),
        pytest.param(
            {"GENESYSCLOUD_OAUTHCLIENT_SECRET": ""}, "GENESYSCLOUD_OAUTHCLIENT_SECRET", id="missing-client-secret"
        ),
        pytest.param({"GENESYSCLOUD_REGION": "https://mypurecloud.com/"}, "GENESYSCLOUD_REGION", id="region-is-a-url"),
        pytest.param({"GENESYSCLOUD_REGION": "my purecloud"}, "GENESYSCLOUD_REGION", id="region-not-a-host-name"),
        pytest.param({"PE_REQUESTS_PER_MINUTE": "0"}, "PE_REQUESTS_PER_MINUTE", id="rpm-zero"),
        pytest.param({"PE_REQUESTS_PER_MINUTE": "-5"}, "PE_REQUESTS_PER_MINUTE", id="rpm-negative"),
        pytest.param({"PE_REQUESTS_PER_MINUTE": "eighty"}, "PE_REQUESTS_PER_MINUTE", id="rpm-text"),
        pytest.param({"PE_PARTITIONS_START": "2099-01-01"}, "PE_PARTITIONS_START", id="start-in-the-future"),
        pytest.param({"PE_PARTITIONS_START": "01/03/2024"}, "PE_PARTITIONS_START", id="start-not-a-date"),
        pytest.param({"GENESYSCLOUD_API_URL": "http://example.com"}, "GENESYSCLOUD_API_URL", id="api-url-plain-http"),
        pytest.param({"GENESYSCLOUD_LOGIN_URL": "ftp://login.x.com"}, "GENESYSCLOUD_LOGIN_URL", id="login-url-ftp"),
        pytest.param({"PE_SOURCE": "genesys"}, "PE_SOURCE", id="unknown-source"),
        pytest.param({"PE_WAREHOUSE": "bigquery"}, "PE_WAREHOUSE", id="unknown-warehouse"),
        pytest.param({"PE_STEP_RETRY_DELAY_SECONDS": "soon"}, "PE_STEP_RETRY_DELAY_SECONDS", id="retry-delay-text"),
        pytest.param({"PE_WAREHOUSE": "snowflake"}, "SNOWFLAKE_ACCOUNT", id="snowflake-without-account"),
        pytest.param({"PE_BUDGET_URL": "postgresql://pe:pw@db:5432/pe"}, "PE_BUDGET_URL", id="budget-url-password"),
        pytest.param({"PE_BUDGET_URL": "redis://db:6379/0"}, "PE_BUDGET_URL", id="budget-url-not-postgres"),
        pytest.param({"PE_BUDGET_URL": "postgresql://db:5432/pe"}, "PE_BUDGET_URL", id="budget-url-no-user"),
        pytest.param({"PE_BACKFILL_DAYS_PER_RUN": "0"}, "PE_BACKFILL_DAYS_PER_RUN", id="days-per-run-zero"),
        pytest.param({"PE_BACKFILL_DAYS_PER_RUN": "week"}, "PE_BACKFILL_DAYS_PER_RUN", id="days-per-run-text"),
    ],
)
def test_malformed_settings_fail_naming_the_variable(change, names):
    env = {**GOOD_ENV, **change}
    with pytest.raises(SettingsError, match=names) as raised:
        Settings.from_env(env, today=date(2026, 1, 1))
    assert ":pw@" not in str(raised.value)  # a password in a URL is never echoed
    Settings.from_env(GOOD_ENV, today=date(2026, 1, 1))  # the good settings themselves load
