"""Service fixtures: settings on a tmp state dir (fake driver, two tokens), DB sessions on it, real API processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from service_helpers import FAKE_DRIVER, TOKEN, TOKEN_B, ApiProcess, reap_drivers
from sqlalchemy.orm import Session, sessionmaker

from service.queue.db import make_engine, make_session_factory, migrate
from service.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Embedded-mode settings on a fresh state dir, with the fake driver and two tokens."""
    (tmp_path / "data").mkdir()
    yield Settings(
        state_dir=tmp_path / "state",
        data_root=tmp_path / "data",
        driver_command=FAKE_DRIVER,
        api_tokens=[TOKEN, TOKEN_B],
        poll_interval_s=0.1,
        max_trials_per_sweep=50,
        max_epochs=20,
        max_active_sweeps_per_token=3,
    )
    reap_drivers(tmp_path / "state")


@pytest.fixture
def factory(settings: Settings) -> sessionmaker[Session]:
    """Sessions on the settings' database, migrated to the current schema (what the API and the runner use)."""
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    return make_session_factory(engine)


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Factory of API processes; every one started is stopped at teardown."""
    started: list[ApiProcess] = []

    def make(**overrides: str) -> ApiProcess:
        env = {
            **os.environ,
            "RDVAE_STATE_DIR": str(tmp_path / "state"),
            "RDVAE_DATA_ROOT": str(tmp_path),
            "RDVAE_API_TOKENS": f"{TOKEN},{TOKEN_B}",
            "RDVAE_POLL_INTERVAL_S": "0.2",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            **overrides,
        }
        api = ApiProcess(env, tmp_path / "api.log")
        started.append(api)
        return api

    yield make
    for api in started:
        api.stop()
    reap_drivers(tmp_path / "state")
