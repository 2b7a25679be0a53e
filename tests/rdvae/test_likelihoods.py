"""Tests of rdvae.likelihoods: every log-density against torch.distributions / scipy closed forms, in nats."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import stats

from rdvae import DataSplits, ModelConfig, RunConfig, TrainConfig, build_model, fit, load_checkpoint, save_checkpoint
from rdvae.likelihoods import (
    bernoulli_log_prob,
    gaussian_log_prob,
    negative_binomial_log_prob,
    poisson_log_prob,
    zero_inflated_nb_log_prob,
)

GENERATOR = torch.Generator().manual_seed(0)


def _counts(shape: tuple[int, ...], high: int = 40) -> torch.Tensor:
    counts = torch.randint(0, high, shape, generator=GENERATOR).double()
    counts[0, :3] = 0.0  # zeros are where ZINB differs from NB
    return counts


def test_bernoulli_matches_torch_distributions() -> None:
    x = torch.randint(0, 2, (6, 5), generator=GENERATOR).double()
    logits = torch.randn(6, 5, generator=GENERATOR, dtype=torch.float64)
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x)
    torch.testing.assert_close(bernoulli_log_prob(x, logits), expected)


def test_gaussian_matches_torch_distributions() -> None:
    x = 5.0 * torch.randn(6, 5, generator=GENERATOR, dtype=torch.float64)
    mean = torch.randn(6, 5, generator=GENERATOR, dtype=torch.float64)
    log_var = torch.randn(6, 5, generator=GENERATOR, dtype=torch.float64)
    expected = torch.distributions.Normal(mean, (0.5 * log_var).exp()).log_prob(x)
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_var), expected)


def test_poisson_matches_torch_distributions_and_scipy() -> None:
    x = _counts((6, 5))
    log_rate = torch.randn(6, 5, generator=GENERATOR, dtype=torch.float64) + 2.0
    got = poisson_log_prob(x, log_rate)
    torch.testing.assert_close(got, torch.distributions.Poisson(log_rate.exp()).log_prob(x))
    np.testing.assert_allclose(got.numpy(), stats.poisson.logpmf(x.numpy(), log_rate.exp().numpy()), rtol=1e-10)


def test_negative_binomial_matches_scipy() -> None:
    x = _counts((6, 5), high=200)
    log_mean = torch.randn(6, 5, generator=GENERATOR, dtype=torch.float64) + 3.0
    log_theta = torch.randn(5, generator=GENERATOR, dtype=torch.float64)
    mean, theta = log_mean.exp().numpy(), log_theta.exp().numpy()
    # scipy's nbinom(n, p) counts failures before the n-th success: n = theta, p = theta / (theta + mean)
    expected = stats.nbinom.logpmf(x.numpy(), theta, theta / (theta + mean))
    np.testing.assert_allclose(negative_binomial_log_prob(x, log_mean, log_theta).numpy(), expected, rtol=1e-9)


def test_negative_binomial_matches_torch_distributions() -> None:
    x = _counts((4, 3))
    log_mean = torch.randn(4, 3, generator=GENERATOR, dtype=torch.float64) + 2.0
    log_theta = torch.randn(3, generator=GENERATOR, dtype=torch.float64)
    # torch counts successes with probability `probs` before total_count failures: probs = mean / (theta + mean)
    theta = log_theta.exp().expand_as(log_mean)
    reference = torch.distributions.NegativeBinomial(total_count=theta, logits=log_mean - log_theta)
    torch.testing.assert_close(negative_binomial_log_prob(x, log_mean, log_theta), reference.log_prob(x))


def test_zero_inflated_nb_matches_the_scipy_mixture() -> None:
    x = _counts((6, 5), high=60)
    log_mean = torch.randn(6, 5, generator=GENERATOR, dtype=torch.float64) + 2.0
    log_theta = torch.randn(5, generator=GENERATOR, dtype=torch.float64)
    dropout_logits = torch.randn(6, 5, generator=GENERATOR, dtype=torch.float64)
    mean, theta = log_mean.exp().numpy(), log_theta.exp().numpy()
    pi = torch.sigmoid(dropout_logits).numpy()
    nb = stats.nbinom.pmf(x.numpy(), theta, theta / (theta + mean))
    expected = np.log(np.where(x.numpy() == 0, pi + (1 - pi) * nb, (1 - pi) * nb))
    got = zero_inflated_nb_log_prob(x, log_mean, log_theta, dropout_logits)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9)
    # the mixture sums to one over the counts
    grid = torch.arange(0, 3000, dtype=torch.float64)[:, None]
    total = zero_inflated_nb_log_prob(grid, log_mean[:1, :1], log_theta[:1], dropout_logits[:1, :1]).exp().sum()
    assert abs(float(total) - 1.0) < 1e-8


def _model(likelihood: str, input_dim: int = 6, **extra: object) -> torch.nn.Module:
    config = ModelConfig(likelihood=likelihood, latent_dim=2, hidden_dims=(8,), **extra)
    return build_model(config, input_dim, (input_dim,)).double()


@pytest.mark.parametrize("likelihood", ["poisson", "nb", "zinb"])
def test_count_models_scale_softmax_proportions_by_the_observed_library(likelihood: str) -> None:
    model = _model(likelihood)
    with torch.no_grad():
        if likelihood != "poisson":
            model.likelihood.log_theta.copy_(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64))
    x = _counts((5, 6))
    z = torch.randn(5, 2, generator=GENERATOR, dtype=torch.float64)
    with torch.no_grad():
        out = model.decoder(z)
    logits = out[:, :6]
    mean = (x.sum(-1, keepdim=True) * torch.softmax(logits, -1)).numpy()
    if likelihood == "poisson":
        expected = stats.poisson.logpmf(x.numpy(), mean)
    else:
        theta = model.likelihood.log_theta.exp().detach().numpy()
        expected = stats.nbinom.logpmf(x.numpy(), theta, theta / (theta + mean))
        if likelihood == "zinb":
            pi = torch.sigmoid(out[:, 6:]).detach().numpy()
            nb = np.exp(expected)
            expected = np.log(np.where(x.numpy() == 0, pi + (1 - pi) * nb, (1 - pi) * nb))
    got = model.log_likelihood(x, z).detach().numpy()
    np.testing.assert_allclose(got, expected.sum(-1), rtol=1e-9)
    proportions = model.reconstruct_mean(z)
    assert proportions.shape == (5, 6)
    library = x.sum(-1)
    if likelihood != "zinb":
        torch.testing.assert_close(proportions.sum(-1), torch.ones(5, dtype=torch.float64))
        np.testing.assert_allclose(model.reconstruct_mean(z, library).numpy(), mean, rtol=1e-9)


def test_an_all_zero_example_has_a_finite_likelihood_and_gradient() -> None:
    model = _model("nb")
    x = _counts((4, 6))
    x[1] = 0.0  # library size 0: mean 0, probability 1 of all zeros
    log_likelihood, _mu, _logvar = model(x)
    assert torch.isfinite(log_likelihood).all()
    assert abs(float(model.log_likelihood(x[1:2], torch.zeros(1, 2, dtype=torch.float64)).detach())) < 1e-12
    log_likelihood.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_count_encoders_see_log1p_counts() -> None:
    model = _model("poisson")
    x = _counts((3, 6), high=4000)
    torch.testing.assert_close(model.encode(x)[0], model.encoder(torch.log1p(x)).chunk(2, -1)[0])


def test_standardised_gaussian_is_a_density_of_x_in_its_own_units(tmp_path: Path) -> None:
    config = ModelConfig(
        likelihood="gaussian", gaussian_variance="learned", standardize=True, latent_dim=2, hidden_dims=(8,)
    )
    x = 1000.0 + 50.0 * torch.randn(40, 4, generator=GENERATOR)
    splits = DataSplits(x[:30], x[30:35], x[35:], (4,), dynamic=False)
    run = RunConfig(model=config, train=TrainConfig(epochs=1, batch_size=10, iwae_samples=0, device="cpu"))
    model = fit(run, data=splits).model.double()
    m, s = model.likelihood.feature_mean, model.likelihood.feature_std
    torch.testing.assert_close(m, x[:30].double().mean(0))
    torch.testing.assert_close(s, x[:30].double().std(0))
    z = torch.randn(5, 2, generator=GENERATOR, dtype=torch.float64)
    out = model.decoder(z)
    mean, log_var = out[:, :4], out[:, 4:].clamp(-10.0, 5.0)
    data = x[:5].double()
    # x = m + s * y with y ~ N(mean, var): x ~ N(m + s * mean, s^2 var)
    expected = torch.distributions.Normal(m + s * mean, s * (0.5 * log_var).exp()).log_prob(data).sum(-1)
    torch.testing.assert_close(model.log_likelihood(data, z), expected)
    torch.testing.assert_close(model.reconstruct_mean(z), m + s * mean)
    torch.testing.assert_close(model.encode(data)[0], model.encoder((data - m) / s).chunk(2, -1)[0])
    # the statistics travel with the checkpoint
    save_checkpoint(tmp_path / "model.pt", model.float(), run)
    restored, _config = load_checkpoint(tmp_path / "model.pt")
    torch.testing.assert_close(restored.likelihood.feature_std, s.float())


def test_fixed_variance_gaussian_takes_any_real_range() -> None:
    model = _model("gaussian", gaussian_std=2.0)
    x = 1e4 * torch.randn(3, 6, generator=GENERATOR, dtype=torch.float64)
    z = torch.zeros(3, 2, dtype=torch.float64)
    expected = torch.distributions.Normal(model.decoder(z), 2.0).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_likelihood(x, z), expected)
    assert math.isfinite(float(model.log_likelihood(x, z).sum()))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"likelihood": "nb", "decoder": "made"}, "needs likelihood 'bernoulli'"),
        ({"likelihood": "zinb", "standardize": True}, "standardize applies to likelihood 'gaussian' only"),
        ({"likelihood": "negative_binomial"}, "likelihood"),
    ],
)
def test_model_configs_refuse_mismatched_likelihood_options(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelConfig(**fields)
