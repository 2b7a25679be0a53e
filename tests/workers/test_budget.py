"""The capacity ramp of a sweep: fixed as a share of training, refused where it cannot reach C, same in every part."""

from __future__ import annotations

import pytest

from rdvae import DataConfig, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig, fit, load_data
from workers import SweepSpec
from workers.budget import SpecFieldError, anneal_end_epoch, check_budget, train_examples
from workers.trainable import run_config

CAPACITY = {"dataset": "digits", "epochs": 10, "batch_size": 128, "search_space": {"objective": ["capacity"]}}


def test_the_ramp_is_a_share_of_the_run_and_always_reaches_c() -> None:
    spec = SweepSpec.model_validate(CAPACITY)
    assert train_examples(spec) == 1437  # 1797 digits less 10 % validation and 10 % test
    check_budget(spec)  # a fraction <= 1 always ends before the last epoch
    objective = run_config(spec, {"objective": "capacity", "C": 8.0}).objective
    assert objective.capacity_anneal_fraction == 0.5 and objective.capacity_anneal_steps is None
    fixed = objective.for_run(10 * 11)  # 1437 // 128 = 11 steps per epoch
    assert fixed.capacity_anneal_steps == 55 and fixed.capacity_at(55) == 8.0 and fixed.capacity_at(27) < 4.0
    assert anneal_end_epoch(spec, 1437) == 5


def test_a_ramp_longer_than_the_run_is_refused_naming_the_field() -> None:
    spec = SweepSpec.model_validate(
        {**CAPACITY, "search_space": {"objective": ["capacity"], "capacity_anneal_steps": 1000}}
    )
    with pytest.raises(SpecFieldError, match="exceeds the run's 110 optimiser steps") as refused:
        check_budget(spec)
    assert refused.value.field == "search_space.capacity_anneal_steps"
    # Reachable, or no capacity trial at all: accepted.
    check_budget(
        SweepSpec.model_validate(
            {**CAPACITY, "search_space": {"objective": ["capacity"], "capacity_anneal_steps": 110}}
        )
    )
    check_budget(
        SweepSpec.model_validate({**CAPACITY, "search_space": {"objective": ["beta"], "capacity_anneal_steps": 1000}})
    )


def test_fit_refuses_the_same_run_before_training() -> None:
    config = RunConfig(
        data=DataConfig(name="digits"),
        model=ModelConfig(latent_dim=2, hidden_dims=(8,)),
        objective=ObjectiveConfig(kind="capacity", capacity=5.0, capacity_anneal_steps=1000),
        train=TrainConfig(epochs=2, iwae_samples=0, device="cpu"),
    )
    with pytest.raises(ValueError, match="capacity_anneal_steps 1000 exceeds the run's 22 optimiser steps"):
        fit(config, data=load_data(config.data))
