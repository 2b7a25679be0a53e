"""Tests of rdvae.evaluate: the IWAE bound against the ELBO, and the held-out metrics record."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import pytest
import torch

from rdvae import VAE, DataSplits, ModelConfig, RunConfig, build_model, evaluate, fit, iwae_log_likelihood


@pytest.fixture(scope="module")
def trained(make_run: Callable[..., RunConfig], digits: DataSplits) -> VAE:
    return fit(make_run(epochs=5), data=digits).model


def test_iwae_bound_is_above_the_elbo_and_rises_with_k(trained: VAE, digits: DataSplits) -> None:
    x = digits.validation
    elbo = evaluate(trained, x).elbo
    torch.manual_seed(0)
    bounds = {k: float(iwae_log_likelihood(trained, x, samples=k).mean()) for k in (1, 5, 50, 200)}
    # L_1 is a one-sample ELBO estimate; the analytic-KL ELBO agrees with it up to Monte-Carlo noise.
    assert bounds[1] == pytest.approx(elbo, abs=1.0)
    assert bounds[5] > elbo
    assert bounds[1] < bounds[5] < bounds[50] < bounds[200]
    # A real gap: this under-trained model's posterior is far from exact.
    assert bounds[200] - elbo > 0.2


def test_iwae_k1_averages_to_the_elbo(trained: VAE, digits: DataSplits) -> None:
    x = digits.validation
    torch.manual_seed(1)
    repeated = torch.stack([iwae_log_likelihood(trained, x, samples=1) for _ in range(30)]).mean()
    assert float(repeated) == pytest.approx(evaluate(trained, x).elbo, abs=0.3)


def test_iwae_chunking_keeps_the_bound(trained: VAE, digits: DataSplits) -> None:
    x = digits.validation
    torch.manual_seed(0)
    whole = float(iwae_log_likelihood(trained, x, samples=64).mean())
    torch.manual_seed(0)
    # 60 examples per batch and at most 600 rows in memory: 10 samples per chunk, 7 chunks.
    chunked = float(iwae_log_likelihood(trained, x, samples=64, batch_size=60, max_rows=600).mean())
    assert chunked == pytest.approx(whole, abs=0.3)


def test_iwae_needs_a_sample(trained: VAE, digits: DataSplits) -> None:
    with pytest.raises(ValueError, match="iwae samples must be >= 1"):
        iwae_log_likelihood(trained, digits.validation, samples=0)


def test_evaluate_is_reproducible_and_consistent(trained: VAE, digits: DataSplits) -> None:
    first = evaluate(trained, digits.test, iwae_samples=20, seed=7)
    assert first == evaluate(trained, digits.test, iwae_samples=20, seed=7)
    assert first.distortion != evaluate(trained, digits.test, seed=8).distortion
    assert first.elbo == pytest.approx(-(first.rate + first.distortion))
    assert first.rate == pytest.approx(sum(first.kl_per_dim), rel=1e-5)
    assert first.iwae_ll is not None and first.iwae_ll > first.elbo
    assert 0.0 <= first.mutual_info <= min(first.rate, math.log(digits.test.shape[0]))
    assert first.marginal_kl == pytest.approx(first.rate - first.mutual_info)
    assert trained.training  # evaluate restores the mode it found


def test_as_dict_is_flat_floats_with_nll(trained: VAE, digits: DataSplits) -> None:
    metrics = evaluate(trained, digits.test, iwae_samples=5)
    values = metrics.as_dict()
    assert all(isinstance(value, float) for value in values.values())
    assert values["nll"] == -values["iwae_ll"]
    assert values["collapsed"] in (0.0, 1.0)
    assert "kl_per_dim" not in values
    assert "nll" not in evaluate(trained, digits.test).as_dict()


def test_an_untrained_decoder_that_ignores_z_is_collapsed() -> None:
    model = build_model(ModelConfig(latent_dim=4, hidden_dims=(8,)), 16, (1, 4, 4))
    with torch.no_grad():
        # Encoder output constant (mu = 0, logvar = 0): q(z|x) = p(z) for every x.
        last = model.encoder[-1]
        last.weight.zero_()
        last.bias.zero_()
    metrics = evaluate(model, torch.rand(50, 16).round())
    assert metrics.rate == 0.0
    assert metrics.active_units == 0
    assert metrics.collapsed
    assert metrics.mutual_info == pytest.approx(0.0, abs=1e-6)


def test_evaluate_needs_two_examples(trained: VAE, digits: DataSplits) -> None:
    with pytest.raises(ValueError, match="at least 2 examples"):
        evaluate(trained, digits.test[:1])


@pytest.mark.parametrize(("samples", "max_rows"), [(1, 65_536), (7, 65_536), (64, 65_536), (64, 50), (10, 1)])
def test_iwae_is_exact_when_the_posterior_is_the_prior_and_the_decoder_ignores_z(samples: int, max_rows: int) -> None:
    # q(z|x) = p(z) and p(x|z) = p(x): every importance weight is p(x), so L_k = log p(x) = ELBO exactly for every k
    # and every chunking; a wrong normaliser (log of the chunk size) or a lost chunk shifts it by log(k / kept).
    model = build_model(ModelConfig(latent_dim=4, hidden_dims=(8,)), 16, (1, 4, 4))
    with torch.no_grad():
        model.encoder[-1].weight.zero_()
        model.encoder[-1].bias.zero_()
        model.decoder[0].weight.zero_()
    x = torch.rand(40, 16, generator=torch.Generator().manual_seed(0)).round()
    held_out = evaluate(model, x)
    assert held_out.rate == 0.0
    bound = iwae_log_likelihood(model, x, samples=samples, batch_size=16, max_rows=max_rows)
    assert bound.shape == (40,)
    assert float(bound.mean()) == pytest.approx(held_out.elbo, abs=1e-4)


def test_active_units_of_a_hand_built_encoder_count_the_variance_of_its_means() -> None:
    # mu_u(x) = a_u * tanh(x_u) with unit posterior variance: Var_x(mu_u) = a_u^2 * Var(tanh(x_u)) ~ a_u^2 * 0.145
    # for fair coin pixels, so a = (1, 0.5, 0.1, 0) gives variances (0.145, 0.036, 0.0015, 0): two active units.
    # Counting the variance of sampled z instead of mu (each has variance >= 1) would find all four.
    model = build_model(ModelConfig(latent_dim=4, hidden_dims=(8,)), 16, (1, 4, 4))
    scales = torch.tensor([1.0, 0.5, 0.1, 0.0])
    with torch.no_grad():
        first, last = model.encoder[0], model.encoder[-1]
        first.weight.zero_()
        first.bias.zero_()
        first.weight[:, :8] = torch.eye(8)
        last.weight.zero_()
        last.bias.zero_()
        last.weight[:4, :4] = torch.diag(scales)
    x = torch.rand(2000, 16, generator=torch.Generator().manual_seed(0)).round()
    with torch.no_grad():
        mu, logvar = model.encode(x)
    torch.testing.assert_close(mu, scales * torch.tanh(x[:, :4]))
    assert float(logvar.abs().max()) == 0.0
    held_out = evaluate(model, x)
    assert held_out.active_units == 2
    expected_kl = 0.5 * (scales.pow(2) * torch.tanh(x[:, :4]).pow(2).mean(0))
    torch.testing.assert_close(torch.tensor(held_out.kl_per_dim), expected_kl, atol=1e-5, rtol=1e-4)


def test_final_elbo_uses_the_iwae_draws_and_is_less_noisy(trained: VAE, digits: DataSplits) -> None:
    one = [evaluate(trained, digits.test, seed=seed).elbo for seed in range(6)]
    many = [evaluate(trained, digits.test, iwae_samples=50, seed=seed) for seed in range(6)]
    assert all(m.elbo_samples == 50 and m.iwae_samples == 50 for m in many)
    # k = 50 draws per example instead of 1: the Monte-Carlo spread of the mean ELBO shrinks (~1/sqrt(50)).
    assert statistics.stdev(m.elbo for m in many) < 0.5 * statistics.stdev(one)
    first = many[0]
    assert first.per_example is not None and first.per_example.iwae is not None
    assert float(first.per_example.elbo.mean()) == pytest.approx(first.elbo, abs=1e-4)
    assert float(first.per_example.iwae.mean()) == pytest.approx(first.iwae_ll, abs=1e-4)
    assert first.elbo_se == pytest.approx(float(first.per_example.elbo.std()) / math.sqrt(first.examples), rel=1e-4)
    assert "per_example" not in first.as_dict() and first.as_dict()["elbo_samples"] == 50.0


def test_saturated_mutual_info_is_flagged_and_marginal_kl_withheld(digits: DataSplits) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=4, hidden_dims=(16,)), 64, (1, 8, 8))
    encoder = torch.nn.Linear(64, 8)
    with torch.no_grad():  # far-apart means, variance e^-16: every z names its x, so I(x; z) hits log N
        encoder.weight.mul_(200.0)
        encoder.weight[4:] = 0.0
        encoder.bias[4:] = -16.0
    model.encoder = encoder
    held_out = evaluate(model, digits.test)
    assert held_out.mutual_info_cap == pytest.approx(math.log(digits.test.shape[0]))
    assert held_out.mutual_info_saturated and held_out.marginal_kl is None
    assert held_out.rate > held_out.mutual_info_cap + 10  # the rate keeps ranking where MI has stopped
    assert "marginal_kl" not in held_out.as_dict() and held_out.as_dict()["mutual_info_saturated"] == 1.0
