"""Shared fixtures of the rdvae tests: one CPU thread, a small digits run config, a tmp data root."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rdvae import DataConfig, DataSplits, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig, load_data

# The models under test are tiny: one thread is faster than two fighting over a shared 2-core machine.
torch.set_num_threads(1)


def small_run(
    objective: ObjectiveConfig | None = None,
    data: DataConfig | None = None,
    epochs: int = 4,
    latent_dim: int = 8,
    iwae_samples: int = 0,
    **model: object,
) -> RunConfig:
    """A run that trains on `digits` in well under a second."""
    return RunConfig(
        data=data or DataConfig(name="digits"),
        model=ModelConfig(hidden_dims=(64,), latent_dim=latent_dim, **model),
        objective=objective or ObjectiveConfig(),
        train=TrainConfig(
            epochs=epochs, batch_size=64, learning_rate=3e-3, iwae_samples=iwae_samples, device="cpu", seed=0
        ),
    )


@pytest.fixture(scope="session")
def make_run() -> Callable[..., RunConfig]:
    """The `small_run` factory, as a fixture so test modules need not import conftest."""
    return small_run


@pytest.fixture(scope="session")
def digits() -> DataSplits:
    return load_data(DataConfig(name="digits"))


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data root, also set as RDVAE_DATA_ROOT."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("RDVAE_DATA_ROOT", str(root))
    return root
