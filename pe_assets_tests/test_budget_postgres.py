"""The rate budget on PostgreSQL (PE_BUDGET_URL): one cap across hosts, the database's clock, fail closed.

Everything runs against real PostgreSQL servers: the session's ``postgres`` fixture (a fresh schema
per test isolates them), or a server of the test's own when it must be stopped, restarted or given
a password. The store's contract with the SQLite store is the parametrized sliding-log test in
``test_client_scripted.py``.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest

from pe_assets.client import (
    BudgetStoreError,
    OAuthCredentials,
    PostgresBudgetStore,
    PredictiveEngagementClient,
    PredictiveEngagementError,
    RateBudget,
    budget_key,
)
from pe_assets.client.budget import Grant, Wait
from pe_assets.config import BUDGET_PASSWORD_VAR, Settings
from pe_assets.defs.common.resources import OAuthClientConfig, PredictiveEngagementResource, build_resources
from pe_dev.netns import NamespaceUnavailable, run_hosts
from pe_dev.postgres import PostgresServer, free_port
from pe_dev.simulator import SimulatorServer

KEY = budget_key("client-a")
PASSWORD = "budget-PASSWORD-never-shown"


def fresh_schema() -> str:
    """A schema no other test uses: each test gets empty tables in the shared server."""
    return f"t_{uuid.uuid4().hex[:16]}"


class FakeClockPostgresStore(PostgresBudgetStore):
    """The PostgreSQL store with the database's clock replaced by a test's, to replay exact
    instants (the contract test). Everything else, locks and SQL included, is the real store."""

    def __init__(self, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fake_clock = clock

    def _database_now(self, cursor: Any) -> float:
        return self._fake_clock()


def postgres_store(server: PostgresServer, *, schema: str | None = None, **kwargs: Any) -> PostgresBudgetStore:
    """A store on ``server`` in a fresh schema (or ``schema``, to share it between "hosts")."""
    return PostgresBudgetStore.from_url(server.url, schema=schema or fresh_schema(), **kwargs)


def fake_clock_store(server: PostgresServer, clock: Callable[[], float]) -> PostgresBudgetStore:
    return FakeClockPostgresStore(
        clock, host=server.host, port=server.port, dbname="pe", user="pe", schema=fresh_schema()
    )


def budget(store: PostgresBudgetStore | Path, *, cap: int, window: float, clock: Callable[[], float]) -> RateBudget:
    return RateBudget(store, cap=cap, window=window, clock=clock, inflight_deadline=300.0)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server this test may stop, restart or reconfigure (the session's one must stay as it is).

    Its folder is outside pytest's temporary root, which a pytest session starting elsewhere
    resets to 0700 (the server runs as the postgres user and would lose its data folder)."""
    with tempfile.TemporaryDirectory(prefix="pe-budget-pg-") as folder:
        server = PostgresServer(Path(folder) / "pg").start()
        try:
            yield server
        finally:
            server.stop("immediate")


# -- the database's clock decides --------------------------------------------------------------------
def test_skewed_host_clocks_still_share_one_cap(postgres: PostgresServer, tmp_path: Path) -> None:
    schema = fresh_schema()
    on_time = budget(postgres_store(postgres, schema=schema), cap=3, window=60.0, clock=time.time)
    an_hour_ahead = budget(
        postgres_store(postgres, schema=schema), cap=3, window=60.0, clock=lambda: time.time() + 3600
    )
    an_hour_behind = budget(
        postgres_store(postgres, schema=schema), cap=3, window=60.0, clock=lambda: time.time() - 3600
    )
    grants = [on_time.try_acquire([KEY]), an_hour_ahead.try_acquire([KEY]), an_hour_behind.try_acquire([KEY])]
    assert all(isinstance(g, Grant) for g in grants)
    # Host clocks an hour apart: with their own clocks the ahead host would see the others'
    # slots as long gone. The database's clock makes all three see the same full window.
    for host in (on_time, an_hour_ahead, an_hour_behind):
        assert isinstance(host.try_acquire([KEY]), Wait)
        assert host.used(KEY) == 3
    for grant, host in zip(grants, (on_time, an_hour_ahead, an_hour_behind), strict=True):
        assert isinstance(grant, Grant)
        host.release(grant)
    # Released "now" by the database's clock: the slots free in a window, not at once, not in an hour.
    wait = an_hour_behind.try_acquire([KEY])
    assert isinstance(wait, Wait) and 50.0 < wait.seconds <= 60.0
    for host in (on_time, an_hour_ahead, an_hour_behind):
        host.close()

    # The same hosts on one SQLite file (each trusting its own clock) overrun the cap: the skew
    # above was real, and only the database's clock absorbed it.
    path = tmp_path / "skewed.sqlite"
    local_ahead = budget(path, cap=3, window=60.0, clock=lambda: time.time() + 3600)
    local_on_time = budget(path, cap=3, window=60.0, clock=time.time)
    taken = [local_on_time.try_acquire([KEY]) for _ in range(3)]
    for grant in taken:
        assert isinstance(grant, Grant)
        local_on_time.release(grant)
    assert all(isinstance(local_ahead.try_acquire([KEY]), Grant) for _ in range(3))  # 6 in one window
    local_ahead.close()
    local_on_time.close()


def test_racing_hosts_never_both_take_the_last_slot(postgres: PostgresServer) -> None:
    # Four "hosts" (own connections), three threads each, all racing for 5 slots with nothing
    # released and nothing expiring (60 s window): exactly 5 grants, whatever the interleaving.
    schema = fresh_schema()
    hosts = [budget(postgres_store(postgres, schema=schema), cap=5, window=60.0, clock=time.time) for _ in range(4)]
    other = budget_key("client-b")
    granted: list[Grant] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def race(host: RateBudget) -> None:
        start.wait()
        for _ in range(4):
            decision = host.try_acquire([KEY, other])  # two keys: locks taken in one order, no deadlock
            if isinstance(decision, Grant):
                with lock:
                    granted.append(decision)

    threads = [threading.Thread(target=race, args=(host,)) for host in hosts for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_key = {key: sum(1 for g in granted if g.key == key) for key in (KEY, other)}
    assert by_key == {KEY: 5, other: 5}
    assert len({g.slot_id for g in granted}) == 10
    for host in hosts:
        host.close()


# -- several hosts, one budget ---------------------------------------------------------------------
def test_three_hosts_extract_within_one_shared_cap(postgres: PostgresServer) -> None:
    cap, window = 20, 2.0
    options: dict[str, Any] = {"cap": cap, "window": window, "days_per_host": 7}
    try:
        run = run_hosts(3, **options)
    except NamespaceUnavailable as exc:
        print(f"network namespaces unavailable ({exc}): three processes on loopback instead")
        run = run_hosts(3, namespaces=False, postgres=postgres, budget_schema=fresh_schema(), **options)
    print(
        f"hosts in network namespaces: {run.namespaces}; requests {run.requests}, 429s "
        f"{run.rate_limited_429s}, most in a window {run.max_in_window}/{cap}, span {run.span_seconds:.2f}s"
    )
    assert [h.error for h in run.hosts] == [None, None, None]
    assert all(h.requests > 0 for h in run.hosts)  # each host did its share
    assert run.requests == sum(h.requests for h in run.hosts)
    assert run.rate_limited_429s == 0 and sum(h.rate_limited_429s for h in run.hosts) == 0
    assert run.max_in_window <= cap
    # Aggregate throughput, first to last request, against the cap's rate.
    assert run.requests / run.span_seconds >= 0.95 * cap / window


# -- fail closed ---------------------------------------------------------------------------------
def _client(sim: SimulatorServer, store: PostgresBudgetStore) -> PredictiveEngagementClient:
    return PredictiveEngagementClient(
        sim.api_url,
        sim.login_url,
        OAuthCredentials(sim.client_id, sim.client_secret),
        requests_per_minute=20,
        rate_window_seconds=2.0,
        budget_path=store,
        max_attempts=2,
        backoff_seconds=0.01,
    )


def test_unreachable_store_sends_nothing_and_says_why(make_simulator: Callable[..., SimulatorServer]) -> None:
    sim = make_simulator()
    closed_port = free_port()
    store = PostgresBudgetStore(host="127.0.0.1", port=closed_port, dbname="pe", user="pe", password=PASSWORD)
    with _client(sim, store) as client, pytest.raises(BudgetStoreError) as caught:
        client.list_campaigns()
    error = caught.value
    assert isinstance(error, PredictiveEngagementError) and error.retryable
    assert "rate budget store unreachable" in str(error)
    assert f"127.0.0.1:{closed_port}" in str(error) and "database 'pe'" in str(error)
    assert "sends no request without it" in str(error)
    for text in (str(error), repr(error), repr(store), repr(client), repr(client._budget)):
        assert PASSWORD not in text
    assert sim.request_log == []  # not even a token request


def test_postgres_restart_mid_run(make_simulator: Callable[..., SimulatorServer], own_postgres: PostgresServer) -> None:
    sim = make_simulator()
    with _client(sim, postgres_store(own_postgres)) as client:
        client.list_campaigns()
        sent = len(sim.request_log)
        own_postgres.stop("fast")
        with pytest.raises(BudgetStoreError, match=f"{own_postgres.host}:{own_postgres.port}"):
            client.list_campaigns()
        assert len(sim.request_log) == sent  # down: nothing sent
        own_postgres.start()
        client.list_campaigns()  # the next acquire reconnects
        assert len(sim.request_log) > sent
        # Restarted while the client was idle: its old connection is dead, the first use reopens it.
        own_postgres.stop("fast")
        own_postgres.start()
        client.list_campaigns()


def test_wrong_password_fails_closed_without_echoing_it(
    make_simulator: Callable[..., SimulatorServer], own_postgres: PostgresServer
) -> None:
    with contextlib.closing(psycopg2.connect(own_postgres.url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ALTER USER pe PASSWORD %s", (PASSWORD,))
            # From now on TCP logins need the password (first matching line wins).
            hba = own_postgres.data / "pg_hba.conf"
            hba.write_text("host all all 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            cur.execute("SELECT pg_reload_conf()")
    sim = make_simulator()
    wrong = "not-the-PASSWORD-either"
    with (
        _client(sim, postgres_store(own_postgres, password=wrong)) as client,
        pytest.raises(BudgetStoreError) as caught,
    ):
        client.list_campaigns()
    assert "password authentication failed" in str(caught.value)
    assert wrong not in str(caught.value) and PASSWORD not in str(caught.value)
    assert sim.request_log == []
    with _client(sim, postgres_store(own_postgres, password=PASSWORD)) as client:
        assert client.list_campaigns()


# -- configuration -------------------------------------------------------------------------------
def test_budget_url_and_password_reach_the_resource_as_envvar(postgres: PostgresServer, tmp_path: Path) -> None:
    environment = {
        "GENESYSCLOUD_OAUTHCLIENT_ID": "id",
        "GENESYSCLOUD_OAUTHCLIENT_SECRET": "secret",
        "PE_DATA_DIR": str(tmp_path),
        "PE_BUDGET_URL": postgres.url,
        BUDGET_PASSWORD_VAR: PASSWORD,
    }
    api = build_resources(Settings.from_env(environment))["pe_api"]
    assert isinstance(api, PredictiveEngagementResource)
    assert api.budget_url == postgres.url
    assert isinstance(api.budget_password, dg.EnvVar) and api.budget_password.env_var_name == BUDGET_PASSWORD_VAR
    unset = {k: v for k, v in environment.items() if k not in ("PE_BUDGET_URL", BUDGET_PASSWORD_VAR)}
    default = build_resources(Settings.from_env(unset))["pe_api"]
    assert isinstance(default, PredictiveEngagementResource)
    assert default.budget_url is None and default.budget_password is None

    # A resource with the URL draws on PostgreSQL (trust auth here ignores the password).
    resource = PredictiveEngagementResource(
        api_url="https://api.example.com",
        login_url="https://login.example.com",
        oauth_clients=[OAuthClientConfig(client_id="id", client_secret="secret")],
        budget_path=str(tmp_path / "unused.sqlite"),
        budget_url=postgres.url,
        budget_password=PASSWORD,
    )
    with resource.client() as client:
        store = client._budget.store
        assert isinstance(store, PostgresBudgetStore) and store.port == postgres.port
        assert isinstance(client._budget.try_acquire([KEY]), Grant)
        assert PASSWORD not in repr(client) + repr(client._budget) + repr(store)
    assert not (tmp_path / "unused.sqlite").exists()
