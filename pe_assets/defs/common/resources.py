"""Dagster resources: thin wrappers that build the plain-Python pieces from configuration.

Secrets arrive only as ``EnvVar``s (see ``build_resources``), so the UI and run config show the
variable's name, never its value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from pe_assets.client import (
    DEFAULT_REQUESTS_PER_MINUTE,
    JourneyAggregatesClient,
    OAuthCredentials,
    PostgresBudgetStore,
    PredictiveEngagementClient,
)
from pe_assets.config import Settings
from pe_assets.landing import LandingZone
from pe_assets.warehouse import DuckDBWarehouse, WarehouseResource


class OAuthClientConfig(dg.Config):
    """One OAuth client (client credentials grant, read scopes only)."""

    client_id: str
    client_secret: str


class PredictiveEngagementResource(dg.ConfigurableResource):
    """Genesys Cloud's Predictive Engagement APIs: tokens, the shared rate budget, retries, paging.

    ``client()`` speaks the seed contract (PE_SOURCE=predictive-engagement), ``journey_client()``
    the real journey aggregates and action maps (PE_SOURCE=journey-aggregates); both draw on the
    one budget: the SQLite file ``budget_path`` (every step and run of a host shares the cap), or,
    when ``budget_url`` is set, a PostgreSQL database shared by every host.
    """

    api_url: str = Field(description="API base URL, e.g. https://api.mypurecloud.com")
    login_url: str = Field(description="Login base URL, e.g. https://login.mypurecloud.com")
    oauth_clients: list[OAuthClientConfig] = Field(description="One or more OAuth clients with the read scopes")
    requests_per_minute: int = Field(
        default=DEFAULT_REQUESTS_PER_MINUTE, description="Cap per OAuth client in any rate window"
    )
    rate_window_seconds: float = Field(default=60.0, description="The cap's window (60 s; tests shrink it)")
    budget_path: str = Field(description="SQLite file holding the rate budget shared by every process")
    budget_url: str | None = Field(
        default=None,
        description="postgresql://USER@HOST:PORT/DB holding the budget shared by every host (PE_BUDGET_URL); "
        "None: budget_path",
    )
    budget_password: str | None = Field(
        default=None, description="Password of budget_url's user; only ever an EnvVar (PE_BUDGET_PASSWORD)"
    )
    timeout_seconds: float = 30.0
    max_retry_after_seconds: float = Field(
        default=300.0, description="A 429 asking for a longer wait fails the step (retryable) instead of sleeping"
    )
    max_concurrency: int = Field(default=8, description="Requests in flight per step")
    job_poll_seconds: float = Field(
        default=3.0, description="First wait between async job status polls (grows x1.5 up to 30 s)"
    )
    job_deadline_seconds: float = Field(default=900.0, description="An async job not done by then fails (retryable)")

    def _shared_arguments(self) -> dict[str, Any]:
        budget: PostgresBudgetStore | str
        if self.budget_url:
            # Fails closed at the first request if the database is unreachable (BudgetStoreError).
            budget = PostgresBudgetStore.from_url(self.budget_url, password=self.budget_password)
        else:
            Path(self.budget_path).parent.mkdir(parents=True, exist_ok=True)
            budget = self.budget_path
        return {
            "api_url": self.api_url,
            "login_url": self.login_url,
            "credentials": [OAuthCredentials(c.client_id, c.client_secret) for c in self.oauth_clients],
            "requests_per_minute": self.requests_per_minute,
            "rate_window_seconds": self.rate_window_seconds,
            "budget_path": budget,
            "timeout_seconds": self.timeout_seconds,
            "max_retry_after_seconds": self.max_retry_after_seconds,
            "max_concurrency": self.max_concurrency,
        }

    @contextmanager
    def client(self) -> Iterator[PredictiveEngagementClient]:
        """A seed-contract client for the duration of one step; its connections are closed afterwards."""
        with PredictiveEngagementClient(**self._shared_arguments()) as client:
            yield client

    @contextmanager
    def journey_client(self) -> Iterator[JourneyAggregatesClient]:
        """A journey aggregates client for the duration of one step; its connections are closed afterwards."""
        with JourneyAggregatesClient(
            **self._shared_arguments(),
            job_poll_seconds=self.job_poll_seconds,
            job_poll_max_seconds=max(30.0, self.job_poll_seconds),
            job_deadline_seconds=self.job_deadline_seconds,
        ) as client:
            yield client


class LandingZoneResource(dg.ConfigurableResource):
    """Where raw responses land, unchanged: a folder or any fsspec URL (PE_LANDING_URL)."""

    url: str

    def zone(self) -> LandingZone:
        return LandingZone(self.url)


class UtcClock(dg.ConfigurableResource):
    """The pipeline's notion of now (extraction times, the 48-hour rule). Tests freeze or shift it."""

    frozen_at: str | None = Field(default=None, description="ISO-8601 instant to use instead of the real time")
    offset_seconds: float = 0.0

    def now(self) -> datetime:
        base = datetime.fromisoformat(self.frozen_at) if self.frozen_at else datetime.now(UTC)
        if base.tzinfo is None:
            base = base.replace(tzinfo=UTC)
        return base.astimezone(UTC) + timedelta(seconds=self.offset_seconds)


def build_warehouse(settings: Settings) -> WarehouseResource:
    """DuckDB by default; Snowflake when PE_WAREHOUSE=snowflake (imported only then: it is slow)."""
    if settings.snowflake is not None:
        from pe_assets.warehouse.snowflake_warehouse import snowflake_warehouse

        return snowflake_warehouse(settings.snowflake)
    return DuckDBWarehouse(path=settings.duckdb_path)


def build_resources(settings: Settings) -> dict[str, object]:
    """The resources of one deployment, chosen by the environment."""
    return {
        "pe_api": PredictiveEngagementResource(
            api_url=settings.api_url,
            login_url=settings.login_url,
            oauth_clients=[
                OAuthClientConfig(client_id=dg.EnvVar(c.id_var), client_secret=dg.EnvVar(c.secret_var))
                for c in settings.oauth_clients
            ],
            requests_per_minute=settings.requests_per_minute,
            budget_path=str(Path(settings.state_dir) / "rate_budget.sqlite"),
            budget_url=settings.budget_url,
            budget_password=dg.EnvVar(settings.budget_password_var) if settings.budget_password_var else None,
        ),
        "landing": LandingZoneResource(url=settings.landing_url),
        "warehouse": build_warehouse(settings),
        "clock": UtcClock(),
    }
