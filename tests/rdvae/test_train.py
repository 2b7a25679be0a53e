"""Tests of rdvae.train: rate-distortion behaviour of the objectives, divergence, checkpoints and resumption."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from rdvae import (
    DataConfig,
    DataSplits,
    ObjectiveConfig,
    RunConfig,
    TrainingDivergedError,
    evaluate,
    fit,
    load_checkpoint,
    save_checkpoint,
)

Run = Callable[..., RunConfig]


def test_large_beta_collapses_the_posterior(make_run: Run, digits: DataSplits) -> None:
    result = fit(make_run(ObjectiveConfig(kind="beta", beta=20.0), epochs=8), data=digits)
    assert result.test is not None
    assert result.test.rate < 0.05
    assert result.test.active_units == 0
    assert result.test.collapsed


def test_kl_warmup_holds_off_the_rate_penalty_of_a_large_beta(make_run: Run, digits: DataSplits) -> None:
    # The same beta = 20 that collapses the posterior in 8 epochs, but the rate weight only reaches
    # 8 * 22 steps / 100 000 ~ 0.2 % of it: the trainer must hand the optimiser step to the objective.
    objective = ObjectiveConfig(kind="beta", beta=20.0, kl_warmup_steps=100_000)
    result = fit(make_run(objective, epochs=8), data=digits)
    assert result.test is not None
    assert result.test.rate > 5.0 and result.test.active_units >= 4


def test_free_bits_keep_a_large_beta_from_collapsing_the_posterior(make_run: Run, digits: DataSplits) -> None:
    # Below 1 nat per dimension the rate term has no gradient, so beta = 20 no longer drives each unit's KL to 0
    # (without free bits every kl_per_dim is ~0, see the test above); above the floor it still pulls it down.
    objective = ObjectiveConfig(kind="beta", beta=20.0, free_bits=1.0)
    result = fit(make_run(objective, epochs=8), data=digits)
    assert result.test is not None
    assert result.test.rate > 2.0 and result.test.active_units >= 4
    assert max(result.test.kl_per_dim) < 1.5


def test_small_beta_keeps_several_active_units(make_run: Run, digits: DataSplits) -> None:
    result = fit(make_run(ObjectiveConfig(kind="beta", beta=0.1), epochs=8), data=digits)
    assert result.test is not None
    assert result.test.active_units >= 4
    assert result.test.rate > 5.0
    assert not result.test.collapsed
    # The reported held-out ELBO weighs the rate with 1, not with the training beta (0.1): -(D + R), which here
    # lies more than 0.9 * 5 nats below the beta-weighted -(D + 0.1 R) a wrong implementation would report.
    for held_out in (result.validation, result.test):
        assert held_out is not None
        assert held_out.elbo == pytest.approx(-(held_out.distortion + held_out.rate))
        assert held_out.elbo < -(held_out.distortion + 0.1 * held_out.rate) - 4.5
    last = result.history[-1]
    assert last["elbo"] == pytest.approx(-(last["distortion"] + last["rate"]))


def test_capacity_objective_holds_the_rate_at_c(make_run: Run, digits: DataSplits) -> None:
    objective = ObjectiveConfig(kind="capacity", capacity=5.0, gamma=100.0, capacity_anneal_steps=100)
    result = fit(make_run(objective, epochs=15), data=digits)
    assert result.validation is not None and result.test is not None
    assert result.validation.rate == pytest.approx(5.0, abs=0.5)
    assert result.test.rate == pytest.approx(5.0, abs=0.75)


def test_synthetic_data_uses_about_its_two_true_latent_dimensions(make_run: Run) -> None:
    data = DataConfig(name="synthetic", synthetic_latent_dim=2)
    result = fit(make_run(data=data, epochs=15), data=None)
    assert result.test is not None
    # Pixels are sigmoid(W z + b) of a 2-d z: the ELBO opens about two of the eight units, not none, not all.
    assert 2 <= result.test.active_units <= 4
    assert result.test.mutual_info > 1.5


def test_history_has_one_record_per_evaluated_epoch_and_a_callback_can_stop(make_run: Run, digits: DataSplits) -> None:
    seen: list[int] = []

    def stop_at_two(epoch: int, record: dict[str, float]) -> bool:
        seen.append(epoch)
        assert record["epoch"] == epoch and "elbo" in record and "train_loss" in record
        return epoch == 2

    result = fit(make_run(epochs=5), callback=stop_at_two, data=digits)
    assert seen == [1, 2]
    assert result.stopped_early
    assert [record["epoch"] for record in result.history] == [1.0, 2.0]
    assert result.history[-1]["step"] == 2 * (digits.train.shape[0] // 64)


def test_non_finite_data_raises_divergence_naming_epoch_and_step(make_run: Run, digits: DataSplits) -> None:
    train = digits.train.clone()
    train[:, 5] = float("inf")
    bad = dataclasses.replace(digits, train=train)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 0\b"):
        fit(make_run(epochs=2), data=bad)


def test_divergence_after_resume_names_the_later_epoch_and_step(
    make_run: Run, digits: DataSplits, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "run.pt"
    fit(make_run(epochs=2), data=digits, checkpoint_path=checkpoint)
    train = digits.train.clone()
    train[7, 3] = float("nan")  # one poisoned example: its batch position decides the step
    steps_per_epoch = digits.train.shape[0] // 64
    with pytest.raises(TrainingDivergedError) as caught:
        fit(make_run(epochs=4), data=dataclasses.replace(digits, train=train), resume_from=checkpoint)
    found = re.search(r"epoch (\d+), step (\d+)", str(caught.value))
    assert found is not None
    epoch, step = int(found[1]), int(found[2])
    # Example 7 is in every epoch's batches unless it fell in the dropped remainder: epoch 3 or, rarely, 4.
    assert epoch in (3, 4)
    assert (epoch - 1) * steps_per_epoch <= step < epoch * steps_per_epoch


def test_checkpoint_round_trip_reproduces_the_held_out_metrics(
    make_run: Run, digits: DataSplits, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "nested" / "run.pt"
    result = fit(make_run(epochs=3, iwae_samples=10), data=digits, checkpoint_path=checkpoint)
    model, config = load_checkpoint(checkpoint)
    assert config == result.config
    assert result.test is not None
    again = evaluate(model, digits.test, iwae_samples=10, seed=config.train.seed)
    assert again == result.test


def test_save_checkpoint_then_load_gives_the_same_weights(make_run: Run, digits: DataSplits, tmp_path: Path) -> None:
    result = fit(make_run(epochs=1), data=digits)
    path = save_checkpoint(tmp_path / "model.pt", result.model, result.config)
    model, _ = load_checkpoint(path)
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


class _Payload:
    """Unpickling this runs code: it creates the file it names."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[Path, str]]:
        return (Path.write_text, (self.marker, "pwned"))


def test_a_checkpoint_with_a_pickled_object_is_refused(make_run: Run, digits: DataSplits, tmp_path: Path) -> None:
    result = fit(make_run(epochs=1), data=digits)
    path = save_checkpoint(tmp_path / "model.pt", result.model, result.config)
    state = torch.load(path, weights_only=True)
    marker = tmp_path / "executed"
    state["extra"] = _Payload(marker)
    torch.save(state, path)
    with pytest.raises(ValueError, match="refused, not a weights-only checkpoint"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="refused"):
        fit(make_run(epochs=2), data=digits, resume_from=path)
    assert not marker.exists()


def test_a_corrupt_or_incomplete_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint" * 8)
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(tmp_path / "partial.pt")


def test_resumed_fit_continues_from_the_saved_epoch_as_if_uninterrupted(
    make_run: Run, digits: DataSplits, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "run.pt"
    fit(make_run(epochs=2), data=digits, checkpoint_path=checkpoint)
    resumed = fit(make_run(epochs=4), data=digits, resume_from=checkpoint)
    assert [record["epoch"] for record in resumed.history] == [3.0, 4.0]
    assert resumed.history[0]["step"] == 3 * (digits.train.shape[0] // 64)
    straight = fit(make_run(epochs=4), data=digits)
    assert resumed.test is not None and straight.test is not None
    # Per-epoch seeding and the restored Adam state make the resumed run the same run.
    assert resumed.test.elbo == pytest.approx(straight.test.elbo, abs=1e-4)
    for name, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, atol=1e-5, rtol=1e-5)


@pytest.fixture
def model_inputs() -> Iterator[list[torch.Tensor]]:
    """Every batch a VAE's forward receives while the fixture is live (a global forward pre-hook)."""
    seen: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if type(module).__name__ == "VAE" and module.training:
            seen.append(args[0].clone())

    handle = nn.modules.module.register_module_forward_pre_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


def test_dynamic_binarisation_resamples_every_epoch(make_run: Run, model_inputs: list[torch.Tensor]) -> None:
    # One batch per epoch holding the whole training split; every pixel probability is 0.5.
    half = torch.full((200, 16), 0.5)
    held_out = torch.bernoulli(torch.full((50, 16), 0.5), generator=torch.Generator().manual_seed(0))
    splits = DataSplits(half, held_out, held_out.clone(), (1, 4, 4), dynamic=True)
    config = make_run(epochs=3)
    config = config.model_copy(update={"train": config.train.model_copy(update={"batch_size": 200})})
    result = fit(config, data=splits)
    assert len(model_inputs) == 3
    for batch in model_inputs:
        assert set(batch.unique().tolist()) == {0.0, 1.0}
        assert abs(float(batch.mean()) - 0.5) < 0.05
    assert not torch.equal(model_inputs[0], model_inputs[1])
    assert not torch.equal(model_inputs[1], model_inputs[2])
    # The held-out bits are the given ones: evaluating them again reproduces the reported metrics.
    assert result.test == evaluate(result.model, held_out, iwae_samples=0, seed=0)


def test_static_data_is_only_reordered_between_epochs(make_run: Run, model_inputs: list[torch.Tensor]) -> None:
    values = torch.rand(200, 16).round()
    splits = DataSplits(values, values[:50], values[50:100], (1, 4, 4), dynamic=False)
    config = make_run(epochs=2)
    config = config.model_copy(update={"train": config.train.model_copy(update={"batch_size": 200})})
    fit(config, data=splits)
    first, second = model_inputs
    assert not torch.equal(first, second)
    assert sorted(map(tuple, first.tolist())) == sorted(map(tuple, second.tolist()))


def test_splits_too_small_to_evaluate_are_refused(make_run: Run, digits: DataSplits) -> None:
    tiny = dataclasses.replace(digits, validation=digits.validation[:1])
    with pytest.raises(ValueError, match="validation and test examples"):
        fit(make_run(epochs=1), data=tiny)
