"""Configuration of the Predictive Engagement simulator.

Everything a test or the CLI can tune lives in :class:`SimulatorConfig`; every field has a
default so ``SimulatorConfig()`` gives the standard seeded world with one read-only client.
The same server also serves the real Genesys journey-aggregate endpoints (``journey_*`` and
``*action_maps`` fields; ``pe_assets/contract/genesys-journey-aggregates.openapi.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

VIEW_SCOPE = "predictive-engagement:view"
ANALYTICS_SCOPE = "predictive-engagement:analytics:view"
#: The two scopes an extraction client needs (and the default client holds).
READ_SCOPES: tuple[str, ...] = (VIEW_SCOPE, ANALYTICS_SCOPE)
#: Holding any of these puts a token under the stricter ("trap") rate limit.
WRITE_SCOPES: tuple[str, ...] = (
    "predictive-engagement:edit",
    "predictive-engagement:campaign:edit",
    "predictive-engagement:scorecard:edit",
)
#: Fault kinds the simulator can inject.
FAULT_KINDS: tuple[str, ...] = ("5xx", "drop", "slow", "429", "revoke")

#: Genesys permission (role-granted, per OAuth client) for ``/api/v2/analytics/journeys/aggregates/*``.
AGGREGATE_PERMISSION = "analytics:journeyAggregate:view"
#: Genesys permission for ``GET /api/v2/journey/actionmaps``.
ACTION_MAP_PERMISSION = "journey:actionmap:view"
#: The two permissions a journey extraction client needs (and the default clients hold).
JOURNEY_PERMISSIONS: tuple[str, ...] = (AGGREGATE_PERMISSION, ACTION_MAP_PERMISSION)
#: Bad-input faults of the journey-aggregates contract (``SimulatorServer.inject_journey_fault``).
JOURNEY_FAULT_KINDS: tuple[str, ...] = (
    "failed_job",  # the next async job ends FAILED
    "expired_job",  # the next async job turns EXPIRED after ``after_pages`` result pages
    "stuck_job",  # the next async job never leaves PENDING
    "non_numeric_count",  # one stats.count is a string
    "bucket_outside_interval",  # one bucket lies before the asked interval
    "group_without_map_id",  # one group lacks journeyActionMapId
    "repeating_cursor",  # a results page hands back the cursor it was asked with
    "unknown_metric",  # a metric name outside the JourneyMetric enum
    "unknown_field",  # a property the contract does not know (schema drift)
)


@dataclass(frozen=True)
class ClientSpec:
    """One OAuth client the login endpoint accepts."""

    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = READ_SCOPES
    #: Genesys permissions of the client's roles; they (not scopes) authorize the journey endpoints.
    permissions: tuple[str, ...] = JOURNEY_PERMISSIONS

    def __post_init__(self) -> None:
        # Accept any iterables but store immutable, ordered tuples.
        object.__setattr__(self, "scopes", tuple(self.scopes))
        object.__setattr__(self, "permissions", tuple(self.permissions))


def default_clients() -> list[ClientSpec]:
    """The clients ``SimulatorConfig()`` accepts (the first one is ``sim.client_id``)."""
    return [
        ClientSpec("pe-sim-client", "pe-sim-secret", READ_SCOPES),
        # A second client allowed write scopes: lets tests show the stricter limit.
        ClientSpec("pe-sim-writer", "pe-sim-writer-secret", READ_SCOPES + WRITE_SCOPES),
    ]


@dataclass
class SimulatorConfig:
    """All knobs of a simulator instance (a dataclass: every field is defaulted).

    Clock: the business "now" is ``frozen_now`` when set, else real UTC plus ``clock_offset``.
    Rate limits use a fixed window of ``window_seconds`` on the real monotonic clock.
    """

    seed: int = 7
    n_campaigns: int = 12
    #: number of scorecards; None means ``max(2, n_campaigns // 3)`` (always fewer than campaigns)
    n_scorecards: int | None = None
    big_campaign_steps: int = 1234
    #: seconds added to every API request
    latency: float = 0.0
    #: extra seconds for analytics windows that are not one whole UTC day ("computed on the fly")
    onfly_latency: float = 0.05
    #: rate-limit cost of an on-the-fly window
    onfly_cost: int = 2
    #: longest analytics window accepted, in days
    max_window_days: int = 31
    client_limit: int = 300
    org_limit: int = 600
    #: a token holding a write scope gets ``client_limit // write_limit_divisor``
    write_limit_divisor: int = 2
    window_seconds: float = 60.0
    token_lifetime: float = 3600.0
    clients: list[ClientSpec] = field(default_factory=default_clients)
    #: probability that an API request gets a random fault (seeded RNG)
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    #: seed of the fault RNG; None means ``seed``
    fault_seed: int | None = None
    #: how long a "slow" fault sleeps before answering
    slow_seconds: float = 5.0
    #: Retry-After of a spurious 429 fault
    fault_retry_after: int = 1
    frozen_now: datetime | None = None
    clock_offset: timedelta = timedelta(0)
    #: append every request record as a JSON line here
    request_log_path: str | None = None
    organization_id: str = "pe-sim-org"

    # --- journey aggregates contract (real Genesys endpoints) ---
    #: action maps in the listing (roles need at least 5)
    n_action_maps: int = 12
    #: extra maps that still appear in aggregates but no longer in the listing (deleted maps)
    n_deleted_action_maps: int = 0
    #: media type one old map still reports although the SDK enum dropped it; None: no such map
    legacy_media_type: str | None = "webchat"
    #: longest sync aggregate interval, in days (longer: 400)
    journey_max_sync_days: int = 31
    #: largest sync answer in groups x buckets (larger: 413, use the async jobs)
    journey_max_sync_cells: int = 10_000
    #: seconds (simulator clock) from job submission to FULFILLED; the first quarter is QUEUED
    journey_job_delay: float = 2.0
    #: seconds results stay readable after completion (then EXPIRED)
    journey_job_ttl: float = 86_400.0
    #: QUEUED/PENDING jobs one client may have; one more gets 429
    journey_max_concurrent_jobs: int = 5

    def __post_init__(self) -> None:
        if self.n_campaigns < 5:
            raise ValueError("n_campaigns must be >= 5 (big, damaged, paused, archived, unscored roles)")
        if self.big_campaign_steps < 4:
            raise ValueError("big_campaign_steps must be >= 4")
        if not self.clients:
            raise ValueError("at least one client is required")
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        # n_campaigns - 2 keeps at least one scorecard shared by two campaigns.
        if self.n_scorecards is not None and not 2 <= self.n_scorecards <= self.n_campaigns - 2:
            raise ValueError("n_scorecards must be between 2 and n_campaigns - 2")
        if self.n_action_maps < 5:
            raise ValueError("n_action_maps must be >= 5 (inactive, content, flow, legacy, sparse roles)")
        if self.n_deleted_action_maps < 0:
            raise ValueError("n_deleted_action_maps must be >= 0")
        if self.journey_max_sync_days < 1 or self.journey_max_sync_cells < 1:
            raise ValueError("journey_max_sync_days and journey_max_sync_cells must be >= 1")
        if self.journey_job_delay < 0 or self.journey_job_ttl <= 0:
            raise ValueError("journey_job_delay must be >= 0 and journey_job_ttl > 0")
        if self.journey_max_concurrent_jobs < 1:
            raise ValueError("journey_max_concurrent_jobs must be >= 1")

    @property
    def scorecard_count(self) -> int:
        """The effective number of scorecards."""
        if self.n_scorecards is not None:
            return self.n_scorecards
        return max(2, self.n_campaigns // 3)
