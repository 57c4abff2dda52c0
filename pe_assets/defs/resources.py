"""Dagster resources: thin wrappers that build the plain-Python pieces from configuration.

Secrets arrive only as ``EnvVar``s (see ``build_resources``), so the UI and run config show the
variable's name, never its value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from pydantic import Field

from pe_assets.client import OAuthCredentials, PredictiveEngagementClient
from pe_assets.config import Settings
from pe_assets.landing import LandingZone
from pe_assets.warehouse import DuckDBWarehouse, WarehouseResource


class OAuthClientConfig(dg.Config):
    """One OAuth client (client credentials grant, read scopes only)."""

    client_id: str
    client_secret: str


class PredictiveEngagementResource(dg.ConfigurableResource):
    """The Predictive Engagement API: tokens, the shared rate budget, retries, pagination."""

    api_url: str = Field(description="API base URL, e.g. https://api.mypurecloud.com")
    login_url: str = Field(description="Login base URL, e.g. https://login.mypurecloud.com")
    oauth_clients: list[OAuthClientConfig] = Field(description="One or more OAuth clients with the read scopes")
    requests_per_minute: int = Field(default=80, description="Cap per OAuth client in any rate window")
    rate_window_seconds: float = Field(default=60.0, description="The cap's window (60 s; tests shrink it)")
    budget_path: str = Field(description="SQLite file holding the rate budget shared by every process")
    timeout_seconds: float = 30.0
    max_retry_after_seconds: float = Field(
        default=300.0, description="A 429 asking for a longer wait fails the step (retryable) instead of sleeping"
    )
    max_concurrency: int = Field(default=8, description="Requests in flight per step")

    @contextmanager
    def client(self) -> Iterator[PredictiveEngagementClient]:
        """A client for the duration of one step; its connection pool is closed afterwards."""
        Path(self.budget_path).parent.mkdir(parents=True, exist_ok=True)
        client = PredictiveEngagementClient(
            api_url=self.api_url,
            login_url=self.login_url,
            credentials=[OAuthCredentials(c.client_id, c.client_secret) for c in self.oauth_clients],
            requests_per_minute=self.requests_per_minute,
            rate_window_seconds=self.rate_window_seconds,
            budget_path=self.budget_path,
            timeout_seconds=self.timeout_seconds,
            max_retry_after_seconds=self.max_retry_after_seconds,
            max_concurrency=self.max_concurrency,
        )
        try:
            yield client
        finally:
            client.close()


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
    if settings.warehouse == "snowflake":
        from pe_assets.warehouse.snowflake_warehouse import snowflake_warehouse_from_env

        return snowflake_warehouse_from_env()
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
        ),
        "landing": LandingZoneResource(url=settings.landing_url),
        "warehouse": build_warehouse(settings),
        "clock": UtcClock(),
    }
