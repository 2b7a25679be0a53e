"""Tests of rdvae.objectives: config validation, capacity annealing and the loss of each objective."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from rdvae import ObjectiveConfig, training_loss
from rdvae.objectives import scheduled_loss

DISTORTION = torch.tensor([10.0, 20.0])  # mean 15
KL = torch.tensor([[1.0, 3.0], [2.0, 0.0]])  # rate 3, per-dimension batch means (1.5, 1.5)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"kind": "beta", "beta": 0.0}, "beta"),
        ({"kind": "beta", "beta": -1.0}, "beta"),
        ({"kind": "elbo", "beta": 2.0}, "beta"),
        ({"kind": "capacity", "capacity": -1.0}, "capacity"),
        ({"kind": "capacity", "gamma": 0.0}, "gamma"),
        ({"kind": "beta", "free_bits": -0.5}, "free_bits"),
        ({"kind": "vq"}, "kind"),
        ({"kind": "beta", "betta": 2.0}, "betta"),
        ({"kind": "beta", "beta": float("nan")}, "beta"),
        ({"kind": "beta", "beta": float("inf")}, "beta"),
        ({"kind": "capacity", "capacity_anneal_steps": -1}, "capacity_anneal_steps"),
        ({"kind": "beta", "kl_warmup_steps": -1}, "kl_warmup_steps"),
    ],
)
def test_objective_config_refuses_bad_values(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        ObjectiveConfig(**fields)


def test_capacity_rises_linearly_then_holds() -> None:
    config = ObjectiveConfig(kind="capacity", capacity=10.0, capacity_anneal_steps=100)
    assert [config.capacity_at(step) for step in (0, 25, 100, 1000)] == [0.0, 2.5, 10.0, 10.0]
    assert ObjectiveConfig(kind="capacity", capacity=4.0, capacity_anneal_steps=0).capacity_at(0) == 4.0


def test_elbo_loss_is_distortion_plus_rate() -> None:
    assert float(training_loss(ObjectiveConfig(), DISTORTION, KL, step=0)) == pytest.approx(18.0)


def test_beta_loss_weights_the_rate() -> None:
    loss = training_loss(ObjectiveConfig(kind="beta", beta=4.0), DISTORTION, KL, step=0)
    assert float(loss) == pytest.approx(15.0 + 4.0 * 3.0)


def test_capacity_loss_penalises_distance_to_the_annealed_capacity() -> None:
    config = ObjectiveConfig(kind="capacity", capacity=5.0, gamma=10.0, capacity_anneal_steps=10)
    assert float(training_loss(config, DISTORTION, KL, step=100)) == pytest.approx(15.0 + 10.0 * 2.0)
    assert float(training_loss(config, DISTORTION, KL, step=2)) == pytest.approx(15.0 + 10.0 * 2.0)
    assert float(training_loss(config, DISTORTION, KL, step=6)) == pytest.approx(15.0 + 0.0)


def test_free_bits_floor_each_dimension() -> None:
    config = ObjectiveConfig(kind="beta", beta=1.0, free_bits=2.0)
    # Batch-mean KL per dimension is (1.5, 1.5): both are raised to the floor of 2.
    assert float(training_loss(config, DISTORTION, KL, step=0)) == pytest.approx(15.0 + 4.0)


def test_kl_warmup_scales_the_rate() -> None:
    config = ObjectiveConfig(kind="beta", beta=2.0, kl_warmup_steps=10)
    assert float(training_loss(config, DISTORTION, KL, step=0)) == pytest.approx(15.0)
    assert float(training_loss(config, DISTORTION, KL, step=5)) == pytest.approx(15.0 + 0.5 * 2.0 * 3.0)


def test_loss_gradient_reaches_the_rate() -> None:
    kl = KL.clone().requires_grad_(True)
    training_loss(ObjectiveConfig(kind="beta", beta=3.0), DISTORTION, kl, step=0).backward()
    assert kl.grad is not None
    torch.testing.assert_close(kl.grad, torch.full_like(kl, 3.0 / 2))


def test_stacked_numbers_under_vmap_give_each_configs_training_loss() -> None:
    configs = [
        ObjectiveConfig(),
        ObjectiveConfig(kind="beta", beta=4.0, kl_warmup_steps=10),
        ObjectiveConfig(kind="capacity", capacity=5.0, gamma=10.0, capacity_anneal_steps=10),
        ObjectiveConfig(kind="beta", beta=1.0, free_bits=2.0),
    ]
    numbers = {key: torch.tensor([c.loss_numbers()[key] for c in configs]) for key in configs[0].loss_numbers()}
    distortion, kl = DISTORTION.expand(len(configs), -1), KL.expand(len(configs), -1, -1)
    for step in (0, 4, 6, 100):
        stacked = torch.vmap(scheduled_loss, in_dims=(0, 0, 0, None))(numbers, distortion, kl, torch.tensor(step))
        expected = [float(training_loss(c, DISTORTION, KL, step=step)) for c in configs]
        assert stacked.tolist() == pytest.approx(expected)
        # A device-tensor step (what a CUDA graph replays) gives what the int step gives.
        assert [float(training_loss(c, DISTORTION, KL, step=torch.tensor(float(step)))) for c in configs] == (
            pytest.approx(expected)
        )
    assert expected[1] != pytest.approx(float(training_loss(configs[1], DISTORTION, KL, step=0)))
