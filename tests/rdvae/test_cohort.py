"""Tests of rdvae.cohort: members reproduce separate fits, and stop, fail, checkpoint and resume on their own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from rdvae import (
    DataConfig,
    DataSplits,
    ModelConfig,
    ObjectiveConfig,
    RunConfig,
    TrainConfig,
    TrainingDivergedError,
    fit,
    load_checkpoint,
    load_data,
)
from rdvae._graphs import GraphedStep
from rdvae._stacked_adam import StackedAdam
from rdvae.cohort import (
    COHORT_CHECKPOINT,
    check_cohort,
    fit_cohort,
    member_checkpoint_name,
    split_into_cohorts,
)

Run = Callable[..., RunConfig]

# Agreement tolerance on held-out R and D (nats). On CPU a member draws exactly the initialisation, batch order
# and noise of its `fit`, so the two differ only by float rounding (batched vs single GEMMs, stacked vs fused
# Adam): measured <= 1e-4 nats for MLP/MADE and ~0.01 for conv after these epochs. Seed-to-seed spread of `fit`
# itself on this set-up is 0.4-0.8 nats (beta 0.5: R 4.0-5.2, D 22.1-24.1 over seeds 0-3), so 0.05 nats is
# ten times tighter than a change of seed: a member training on another member's draws, objective or learning
# rate would fail it.
TOLERANCE_NATS = 0.05


def _with(config: RunConfig, **train: object) -> RunConfig:
    # model_copy skips validation: used for a learning rate beyond TrainConfig's bound, to force an overflow.
    return config.model_copy(update={"train": config.train.model_copy(update=train)})


def _mixed_members(make_run: Run, epochs: int, **model: object) -> list[RunConfig]:
    """Members that differ in beta, C, gamma, annealing, warm-up, free bits, learning rate and seed."""
    return [
        make_run(ObjectiveConfig(), epochs=epochs, **model),
        _with(make_run(ObjectiveConfig(kind="beta", beta=0.5), epochs=epochs, **model), seed=1),
        _with(make_run(ObjectiveConfig(kind="beta", beta=4.0, kl_warmup_steps=40), epochs=epochs, **model), seed=2),
        _with(
            make_run(
                ObjectiveConfig(kind="capacity", capacity=3.0, gamma=50.0, capacity_anneal_fraction=0.4),
                epochs=epochs,
                **model,
            ),
            learning_rate=1e-3,
        ),
        make_run(ObjectiveConfig(kind="beta", beta=2.0, free_bits=0.3), epochs=epochs, **model),
    ]


def _assert_matches_fit(member_metrics: object, fit_metrics: object) -> None:
    assert member_metrics is not None and fit_metrics is not None
    assert member_metrics.rate == pytest.approx(fit_metrics.rate, abs=TOLERANCE_NATS)  # type: ignore[attr-defined]
    assert member_metrics.distortion == pytest.approx(fit_metrics.distortion, abs=TOLERANCE_NATS)  # type: ignore[attr-defined]


def test_members_reproduce_separate_fits(make_run: Run, digits: DataSplits) -> None:
    configs = _mixed_members(make_run, epochs=6)
    result = fit_cohort(configs, data=digits)
    rates = []
    for config, member in zip(configs, result.members, strict=True):
        alone = fit(config, data=digits)
        assert member.status == "completed" and member.config == config
        _assert_matches_fit(member.validation, alone.validation)
        _assert_matches_fit(member.test, alone.test)
        assert [record["epoch"] for record in member.history] == [record["epoch"] for record in alone.history]
        assert member.history[-1]["elbo"] == pytest.approx(alone.history[-1]["elbo"], abs=2 * TOLERANCE_NATS)
        rates.append(member.validation.rate)  # type: ignore[union-attr]
    # The members really trained differently: beta 0.5 keeps far more rate than beta 4.
    assert rates[1] > rates[2] + 2.0


def test_members_with_their_own_epochs_and_gradient_clip_match_fit(make_run: Run, digits: DataSplits) -> None:
    configs = [_with(config, eval_every=2) for config in _mixed_members(make_run, epochs=6)[:3]]
    configs[1] = _with(configs[1], epochs=3, grad_clip=5.0)
    configs[2] = _with(configs[2], grad_clip=0.5)
    result = fit_cohort(configs, data=digits)
    for config, member in zip(configs, result.members, strict=True):
        alone = fit(config, data=digits)
        assert [record["epoch"] for record in member.history] == [record["epoch"] for record in alone.history]
        _assert_matches_fit(member.test, alone.test)
    assert [record["epoch"] for record in result.members[1].history] == [2.0, 3.0]
    # The clip acts: the same member without it ends elsewhere (by far more than fit and member differ).
    unclipped = fit(_with(configs[2], grad_clip=None), data=digits).model.state_dict()
    clipped = result.members[2].model.state_dict()
    assert max(float((unclipped[name] - clipped[name]).abs().max()) for name in clipped) > 0.05


def test_dynamic_binarisation_members_train_like_fit_in_distribution(make_run: Run) -> None:
    # Dynamic binarisation draws the pixels from one cohort generator, not each fit's: members then match fit
    # within the seed-to-seed spread (0.4-0.8 nats), not draw for draw.
    data = DataConfig(name="digits", binarization="dynamic")
    configs = [make_run(ObjectiveConfig(kind="beta", beta=beta), data=data, epochs=4) for beta in (0.5, 2.0)]
    result = fit_cohort(configs, data=load_data(data))
    for config, member in zip(configs, result.members, strict=True):
        alone = fit(config)
        assert member.test is not None and alone.test is not None
        assert member.test.rate == pytest.approx(alone.test.rate, abs=1.5)
        assert member.test.distortion == pytest.approx(alone.test.distortion, abs=1.5)


@pytest.mark.parametrize(
    "model", [{"decoder": "mlp"}, {"encoder": "conv", "decoder": "conv"}, {"decoder": "made"}], ids=str
)
def test_each_decoder_family_matches_fit(make_run: Run, digits: DataSplits, model: dict[str, str]) -> None:
    configs = _mixed_members(make_run, epochs=2, **model)[2:4]
    result = fit_cohort(configs, data=digits)
    for config, member in zip(configs, result.members, strict=True):
        _assert_matches_fit(member.test, fit(config, data=digits).test)


def test_a_stopped_member_stops_changing_and_the_others_go_on(
    make_run: Run, digits: DataSplits, tmp_path: Path
) -> None:
    configs = _mixed_members(make_run, epochs=4)[:3]
    seen: list[tuple[int, int]] = []

    def stop_member_one_at_two(member: int, epoch: int, record: dict[str, float]) -> bool:
        seen.append((member, epoch))
        assert record["epoch"] == epoch and "elbo" in record and "train_loss" in record
        return member == 1 and epoch == 2

    result = fit_cohort(configs, callback=stop_member_one_at_two, data=digits, checkpoint_dir=tmp_path)
    stopped = result.members[1]
    assert stopped.status == "stopped" and stopped.stopped_early
    assert [record["epoch"] for record in stopped.history] == [1.0, 2.0]
    assert [epoch for member, epoch in seen if member == 1] == [1, 2]
    assert [epoch for member, epoch in seen if member == 0] == [1, 2, 3, 4]
    # Its final weights are those of its epoch-2 checkpoint: two more epochs of the cohort left it alone.
    at_stop, _ = load_checkpoint(tmp_path / member_checkpoint_name(1))
    for name, value in stopped.model.state_dict().items():
        assert torch.equal(value, at_stop.state_dict()[name]), name
    stopped_alone = fit(configs[1], callback=lambda epoch, _: epoch == 2, data=digits)
    _assert_matches_fit(stopped.test, stopped_alone.test)
    for member in (0, 2):
        assert result.members[member].status == "completed"
        _assert_matches_fit(result.members[member].test, fit(configs[member], data=digits).test)


def test_a_diverging_member_fails_alone(make_run: Run, digits: DataSplits) -> None:
    configs = _mixed_members(make_run, epochs=3)[:3]
    configs[1] = _with(configs[1], learning_rate=1e30)
    with pytest.raises(TrainingDivergedError) as fit_error:
        fit(configs[1], data=digits)
    result = fit_cohort(configs, data=digits)
    failed = result.members[1]
    assert failed.status == "failed" and failed.validation is None and failed.test is None
    assert failed.error == str(fit_error.value)  # the message `fit` raises, epoch and step included
    assert failed.history == []
    for member in (0, 2):
        assert result.members[member].status == "completed"
        _assert_matches_fit(result.members[member].test, fit(configs[member], data=digits).test)


def test_resume_from_a_cohort_checkpoint_equals_uninterrupted_training(
    make_run: Run, digits: DataSplits, tmp_path: Path
) -> None:
    configs = _mixed_members(make_run, epochs=4)[:4]
    configs[3] = _with(configs[3], learning_rate=1e30)  # fails in epoch 1, before the interruption

    def stop_member_two_at_one(member: int, epoch: int, record: dict[str, float]) -> bool:
        return member == 2 and epoch == 1

    class InterruptionError(Exception):
        pass

    def interrupt_at_three(member: int, epoch: int, record: dict[str, float]) -> bool:
        if epoch == 3:
            raise InterruptionError
        return stop_member_two_at_one(member, epoch, record)

    whole = fit_cohort(configs, callback=stop_member_two_at_one, data=digits)
    with pytest.raises(InterruptionError):
        fit_cohort(configs, callback=interrupt_at_three, data=digits, checkpoint_dir=tmp_path)
    resumed_epochs: list[tuple[int, int]] = []

    def record_and_stop(member: int, epoch: int, record: dict[str, float]) -> bool:
        resumed_epochs.append((member, epoch))
        return stop_member_two_at_one(member, epoch, record)

    resumed = fit_cohort(configs, callback=record_and_stop, data=digits, resume_from=tmp_path / COHORT_CHECKPOINT)
    assert sorted(set(epoch for _, epoch in resumed_epochs)) == [3, 4]  # continued, not restarted
    assert [member.status for member in resumed.members] == ["completed", "completed", "stopped", "failed"]
    for before, after in zip(whole.members, resumed.members, strict=True):
        assert after.status == before.status and after.error == before.error
        assert [r["epoch"] for r in after.history] == [r["epoch"] for r in before.history]
        assert after.validation == before.validation and after.test == before.test
        if before.test is not None:  # the per-example bounds (paired comparisons) survive the checkpoint too
            assert after.test is not None and after.test.per_example is not None
            assert torch.equal(after.test.per_example.elbo, before.test.per_example.elbo)  # type: ignore[union-attr]
        for name, value in before.model.state_dict().items():  # the failed member's weights are NaN in both
            torch.testing.assert_close(after.model.state_dict()[name], value, rtol=0, atol=0, equal_nan=True)


def test_a_member_checkpoint_continues_under_fit(make_run: Run, digits: DataSplits, tmp_path: Path) -> None:
    config = _mixed_members(make_run, epochs=4)[1]
    short = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 2})})
    fit_cohort([short], data=digits, checkpoint_dir=tmp_path)
    continued = fit(config, data=digits, resume_from=tmp_path / member_checkpoint_name(0))
    assert [record["epoch"] for record in continued.history] == [3.0, 4.0]
    # Weights and Adam moments carried over: the continuation lands where an uninterrupted fit does.
    _assert_matches_fit(continued.test, fit(config, data=digits).test)


def test_runs_that_cannot_share_a_program_are_refused_and_split(make_run: Run, digits: DataSplits) -> None:
    small, wide = make_run(latent_dim=4), make_run(latent_dim=8)
    with pytest.raises(ValueError, match=r"member 1 differs from member 0 in model \(.*latent_dim=8"):
        check_cohort([small, wide])
    with pytest.raises(ValueError, match="train.batch_size"):
        check_cohort([small, _with(small, batch_size=32)])
    with pytest.raises(ValueError, match="at least one"):
        fit_cohort([], data=digits)
    check_cohort([small, _with(small, learning_rate=1e-2, seed=5, epochs=9, grad_clip=1.0)])
    configs = [small, wide, _with(small, seed=1), small, _with(wide, seed=2)]
    assert split_into_cohorts(configs, max_size=2) == [[0, 2], [3], [1, 4]]
    with pytest.raises(ValueError, match="max_size"):
        split_into_cohorts(configs, max_size=0)


def test_resume_refuses_a_checkpoint_of_other_configs(make_run: Run, digits: DataSplits, tmp_path: Path) -> None:
    configs = _mixed_members(make_run, epochs=1)[:2]
    fit_cohort(configs, data=digits, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="other run configs"):
        fit_cohort(configs[::-1], data=digits, resume_from=tmp_path / COHORT_CHECKPOINT)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable"):
        fit_cohort(configs, data=digits, resume_from=tmp_path / "junk.pt")


def test_cuda_graph_falls_back_to_eager_on_cpu_and_says_why(
    make_run: Run, digits: DataSplits, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_run(epochs=2)
    graphed = _with(config, cuda_graph=True)
    with caplog.at_level(logging.WARNING, logger="rdvae"):
        fallback = fit(graphed, data=digits)
    assert "train.cuda_graph: CUDA graphs need a CUDA device, this run trains on cpu" in caplog.text
    eager = fit(config, data=digits)
    for name, value in eager.model.state_dict().items():
        assert torch.equal(value, fallback.model.state_dict()[name]), name
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rdvae"):
        cohort = fit_cohort([graphed, _with(graphed, seed=1)], data=digits)
    assert not cohort.graphed and "CUDA device" in str(cohort.graph_reason)
    assert caplog.text.count("cuda_graph") == 1  # once per cohort, not once per compaction
    with pytest.raises(ValidationError, match="compile and cuda_graph"):
        TrainConfig(compile=True, cuda_graph=True)


def test_graphed_step_off_cuda_runs_the_step_every_call() -> None:
    calls: list[int] = []
    step = GraphedStep(lambda: calls.append(1), torch.device("cpu"))
    for _ in range(5):
        step()
    assert len(calls) == 5 and not step.graphed and "CUDA device" in str(step.reason)


def test_stacked_adam_equals_torch_adam_per_member() -> None:
    torch.manual_seed(0)
    shapes = [(5, 3), (3,)]
    learning_rates, clips = [1e-2, 3e-3, 1e-2], [None, 0.5, 2.0]  # two members share a fused call
    members = [[torch.randn(shape, requires_grad=True) for shape in shapes] for _ in learning_rates]
    flat = torch.stack([torch.cat([p.detach().flatten() for p in params]) for params in members])
    adam = StackedAdam(
        flat.requires_grad_(),
        learning_rates,
        torch.tensor([float("inf") if clip is None else clip for clip in clips]),
    )
    optimizers = [torch.optim.Adam(params, lr=lr) for params, lr in zip(members, learning_rates, strict=True)]
    for _ in range(6):
        grad = torch.randn_like(flat)
        adam.step(grad)
        for k, (params, optimizer) in enumerate(zip(members, optimizers, strict=True)):
            for param, piece in zip(params, grad[k].split([p.numel() for p in params]), strict=True):
                param.grad = piece.view(param.shape).clone()
            if clips[k] is not None:
                torch.nn.utils.clip_grad_norm_(params, clips[k])
            optimizer.step()
    expected = torch.stack([torch.cat([p.detach().flatten() for p in params]) for params in members])
    torch.testing.assert_close(adam.params.detach(), expected, rtol=1e-6, atol=1e-7)
    assert adam.steps.tolist() == [6.0, 6.0, 6.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_a_graphed_cohort_trains_like_an_eager_one(make_run: Run, digits: DataSplits) -> None:
    # Batches and noise are drawn outside the graph: graphed and eager members differ by float rounding only.
    configs = [_with(config, device="cuda") for config in _mixed_members(make_run, epochs=2)]
    eager = fit_cohort(configs, data=digits)
    graphed = fit_cohort([_with(config, cuda_graph=True) for config in configs], data=digits)
    assert graphed.graphed and graphed.graph_reason is None
    for first, second in zip(graphed.members, eager.members, strict=True):
        _assert_matches_fit(first.validation, second.validation)


def test_checkpoint_seconds_writes_seldom_but_always_when_a_member_finishes(
    make_run: Run, digits: DataSplits, tmp_path: Path
) -> None:
    configs = _mixed_members(make_run, epochs=4)[:2]
    written: dict[int, list[int]] = {0: [], 1: []}

    def watch(member: int, epoch: int, record: dict[str, float]) -> bool:
        path = tmp_path / member_checkpoint_name(member)
        if path.is_file():
            written[member].append(int(torch.load(path, weights_only=True)["epoch"]))
        return member == 1 and epoch == 2

    result = fit_cohort(configs, callback=watch, data=digits, checkpoint_dir=tmp_path, checkpoint_seconds=1e9)
    # The first epoch's checkpoints, then none until a member finishes: member 1 at 2, member 0 at 4.
    assert written == {0: [1, 1, 1, 1], 1: [1, 1]}
    assert torch.load(tmp_path / member_checkpoint_name(1), weights_only=True)["epoch"] == 2
    assert torch.load(tmp_path / member_checkpoint_name(0), weights_only=True)["epoch"] == 4
    assert torch.load(tmp_path / COHORT_CHECKPOINT, weights_only=True)["epoch"] == 4
    resumed = fit_cohort(configs, data=digits, resume_from=tmp_path / COHORT_CHECKPOINT)
    assert [m.status for m in resumed.members] == [m.status for m in result.members] == ["completed", "stopped"]


@pytest.mark.parametrize(
    ("dataset", "model"),
    [
        ("digits", {"likelihood": "gaussian", "standardize": True}),
        ("digits", {"likelihood": "gaussian", "gaussian_variance": "learned"}),
        ("synthetic_counts", {"likelihood": "nb"}),
    ],
)
def test_members_with_other_likelihoods_match_fit(dataset: str, model: dict[str, object]) -> None:
    data_config = DataConfig(name=dataset, binarization="none")
    config = RunConfig(
        data=data_config,
        model=ModelConfig(latent_dim=4, hidden_dims=(32,), **model),
        objective=ObjectiveConfig(kind="beta", beta=1.0),
        train=TrainConfig(epochs=2, iwae_samples=0, device="cpu"),
    )
    data = load_data(data_config)
    _assert_matches_fit(fit_cohort([config], data=data).members[0].validation, fit(config, data=data).validation)
