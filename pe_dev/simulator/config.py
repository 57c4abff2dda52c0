"""Configuration of the Predictive Engagement simulator.

Everything a test or the CLI can tune lives in :class:`SimulatorConfig`; every field has a
default so ``SimulatorConfig()`` gives the standard seeded world with one read-only client.
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


@dataclass(frozen=True)
class ClientSpec:
    """One OAuth client the login endpoint accepts."""

    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = READ_SCOPES

    def __post_init__(self) -> None:
        # Accept any iterable of scopes but store an immutable, ordered tuple.
        object.__setattr__(self, "scopes", tuple(self.scopes))


def _default_clients() -> list[ClientSpec]:
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
    clients: list[ClientSpec] = field(default_factory=_default_clients)
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

    @property
    def scorecard_count(self) -> int:
        """The effective number of scorecards."""
        if self.n_scorecards is not None:
            return self.n_scorecards
        return max(2, self.n_campaigns // 3)
