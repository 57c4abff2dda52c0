"""Shared pytest fixtures for pe_assets tests.

``simulator``: a running Predictive Engagement simulator with the default config on a free
loopback port (function-scoped). ``make_simulator(**overrides)``: build more, with other settings
(any ``SimulatorConfig`` field); every simulator made is stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pe_dev.postgres import PostgresServer
from pe_dev.simulator import SimulatorConfig, SimulatorServer


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., SimulatorServer]]:
    """Factory: ``make_simulator(seed=3, client_limit=5, window_seconds=1.0)``."""
    started: list[SimulatorServer] = []

    def factory(**overrides: object) -> SimulatorServer:
        sim = SimulatorServer(SimulatorConfig(**overrides), host="127.0.0.1", port=0)  # type: ignore[arg-type]
        sim.start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., SimulatorServer]) -> SimulatorServer:
    """A running simulator with the default config."""
    return make_simulator()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One real PostgreSQL server on loopback for the session (Debian's binaries; see pe_dev.postgres)."""
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server
