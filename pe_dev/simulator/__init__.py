"""Local HTTP simulator of the Genesys Cloud Predictive Engagement analytics API.

Keeps the wire contract in ``pe_assets/contract/predictive-engagement.openapi.yaml``: OAuth
client credentials, scopes, rate limits, cursor pagination, archived campaigns, provisional
scorecard outcomes and retraining, plus injectable faults. The same server also serves the real
Genesys journey aggregates and action maps (``genesys-journey-aggregates.openapi.yaml``;
``journey_aggregates.py``). It shares no code with ``pe_assets.client`` on purpose, so a bug
cannot hide in both.

Typical use::

    from pe_dev.simulator import SimulatorConfig, SimulatorServer

    with SimulatorServer(SimulatorConfig(seed=7), port=0) as sim:
        print(sim.api_url, sim.client_id, sim.client_secret)
"""

from pe_dev.simulator.config import (
    ACTION_MAP_PERMISSION,
    AGGREGATE_PERMISSION,
    ANALYTICS_SCOPE,
    FAULT_KINDS,
    JOURNEY_FAULT_KINDS,
    JOURNEY_PERMISSIONS,
    READ_SCOPES,
    VIEW_SCOPE,
    WRITE_SCOPES,
    ClientSpec,
    SimulatorConfig,
    default_clients,
)
from pe_dev.simulator.journey_aggregates import FUNNEL_METRICS, JourneyWorld
from pe_dev.simulator.predictive_engagement import SCORE_BUCKETS, World
from pe_dev.simulator.server import RequestRecord, SimClock, SimulatorServer

__all__ = [
    "ACTION_MAP_PERMISSION",
    "AGGREGATE_PERMISSION",
    "ANALYTICS_SCOPE",
    "FAULT_KINDS",
    "FUNNEL_METRICS",
    "JOURNEY_FAULT_KINDS",
    "JOURNEY_PERMISSIONS",
    "READ_SCOPES",
    "SCORE_BUCKETS",
    "VIEW_SCOPE",
    "WRITE_SCOPES",
    "ClientSpec",
    "JourneyWorld",
    "RequestRecord",
    "SimClock",
    "SimulatorConfig",
    "SimulatorServer",
    "World",
    "default_clients",
]
