"""Tests of rdvae.metrics against Monte-Carlo estimates and constructed encoders with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from rdvae import metrics


def test_gaussian_kl_matches_monte_carlo() -> None:
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=generator)
    logvar = torch.randn(3, 4, generator=generator)
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn(200_000, 3, 4, generator=generator, dtype=mu.dtype)
    log_q = -0.5 * (metrics.LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp())
    log_p = -0.5 * (metrics.LOG_2PI + z.pow(2))
    monte_carlo = (log_q - log_p).mean(0)
    analytic = metrics.gaussian_kl(mu, logvar)
    assert analytic.shape == (3, 4)
    torch.testing.assert_close(analytic, monte_carlo, atol=0.05, rtol=0.02)


def test_rate_sums_dimensions_and_averages_examples() -> None:
    mu = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    logvar = torch.zeros(2, 2)
    # KL per dim is mu^2 / 2 when the variance is 1: (0.5 + 0) and (4.5 + 2) -> mean 3.5.
    assert metrics.rate(mu, logvar) == pytest.approx(3.5)
    torch.testing.assert_close(metrics.kl_per_dim(mu, logvar), torch.tensor([2.5, 1.0]))
    assert metrics.rate(torch.zeros(5, 3), torch.zeros(5, 3)) == 0.0


def test_distortion_and_elbo_signs() -> None:
    assert metrics.distortion(torch.tensor([-10.0, -20.0])) == pytest.approx(15.0)
    assert metrics.elbo(rate_value=2.0, distortion_value=15.0) == pytest.approx(-17.0)


def test_active_units_counts_dimensions_by_variance_of_the_mean() -> None:
    n = 1000
    signs = torch.tensor([1.0, -1.0]).repeat(n // 2)
    variances = torch.tensor([1.0, 0.03, 0.005, 0.0])
    # mu_u = +-sqrt(v_u) plus a per-unit offset: its variance over x is v_u * n / (n - 1), whatever the offset.
    mu = signs[:, None] * variances.sqrt() + torch.tensor([5.0, -3.0, 2.0, 7.0])
    assert metrics.active_units(mu) == 2
    assert metrics.active_units(mu, threshold=0.001) == 3
    assert metrics.active_units(mu, threshold=2.0) == 0


def test_active_units_needs_two_examples() -> None:
    with pytest.raises(ValueError, match="at least 2 examples"):
        metrics.active_units(torch.zeros(1, 4))


def test_mutual_info_is_zero_for_a_posterior_independent_of_x() -> None:
    torch.manual_seed(0)
    n = 500
    mu = torch.full((n, 3), 0.7)
    logvar = torch.full((n, 3), -0.4)
    assert metrics.mutual_info(mu, logvar) == pytest.approx(0.0, abs=1e-5)


def test_mutual_info_matches_the_gaussian_channel_formula() -> None:
    # mu(x) ~ N(0, s^2), q(z|x) = N(mu(x), v): q(z) = N(0, s^2 + v), so I(x; z) = 0.5 log(1 + s^2 / v).
    torch.manual_seed(0)
    n, s2, v = 2000, 1.0, 0.25
    draws = torch.randn(n, 1)
    # Standardised draws: the test checks the estimator, not the sampling noise of mu's own variance.
    mu = math.sqrt(s2) * (draws - draws.mean()) / draws.std()
    logvar = torch.full((n, 1), math.log(v))
    expected = 0.5 * math.log(1.0 + s2 / v)
    # One z per x makes a single estimate noisy (std ~0.03 nats here): average a few.
    estimate = sum(metrics.mutual_info(mu, logvar, chunk=300) for _ in range(5)) / 5
    assert estimate == pytest.approx(expected, abs=0.04)


def test_mutual_info_reaches_log_n_for_separable_posteriors_and_never_exceeds_it() -> None:
    torch.manual_seed(0)
    n = 64
    mu = 100.0 * torch.arange(n, dtype=torch.float32)[:, None]
    logvar = torch.zeros(n, 1)
    value = metrics.mutual_info(mu, logvar)
    assert value == pytest.approx(math.log(n), abs=1e-3)
    assert value <= math.log(n) + 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mutual_info_is_below_rate_and_log_n(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    n = 400
    mu = 2.0 * torch.randn(n, 4, generator=generator)
    logvar = torch.randn(n, 4, generator=generator) - 1.0
    torch.manual_seed(seed)
    info = metrics.mutual_info(mu, logvar)
    rate = metrics.rate(mu, logvar)
    assert 0.0 < info <= min(rate, math.log(n)) + 1e-6
    kl = metrics.marginal_kl(rate, info)
    assert kl >= 0.0
    assert kl == pytest.approx(rate - info)


def test_mutual_info_chunking_does_not_change_the_value() -> None:
    generator = torch.Generator().manual_seed(3)
    mu = torch.randn(300, 2, generator=generator)
    logvar = torch.randn(300, 2, generator=generator)
    z = mu + torch.randn(300, 2, generator=generator) * (0.5 * logvar).exp()
    whole = metrics.mutual_info(mu, logvar, z, chunk=300)
    assert metrics.mutual_info(mu, logvar, z, chunk=7) == pytest.approx(whole, rel=1e-5)


def test_marginal_kl_is_clipped_at_zero_against_estimator_noise() -> None:
    assert metrics.marginal_kl(rate_value=1.0, mutual_info_value=1.02) == 0.0
    assert metrics.marginal_kl(rate_value=3.0, mutual_info_value=1.0) == pytest.approx(2.0)


def test_is_collapsed() -> None:
    assert metrics.is_collapsed(rate_value=5.0, active_unit_count=0)
    assert metrics.is_collapsed(rate_value=0.05, active_unit_count=2)
    assert not metrics.is_collapsed(rate_value=5.0, active_unit_count=2)
    assert not metrics.is_collapsed(rate_value=0.05, active_unit_count=2, rate_threshold=0.01)


def test_log_mean_exp() -> None:
    values = torch.tensor([[0.0, math.log(3.0)]])
    assert float(metrics.log_mean_exp(values, dim=1)) == pytest.approx(math.log(2.0))


def test_paired_difference_against_a_hand_computation() -> None:
    first = torch.tensor([1.0, 2.0, 3.0, 4.0])
    second = torch.tensor([0.5, 1.5, 3.5, 3.0])
    gap, standard_error = metrics.paired_difference(first, second)
    # differences 0.5, 0.5, -0.5, 1.0: mean 0.375, squared deviations 1.1875 in all, sample variance 1.1875 / 3
    assert gap == pytest.approx(0.375)
    assert standard_error == pytest.approx(math.sqrt(1.1875 / 3) / 2)
    # Pairing removes what both share: adding a per-example offset to both changes nothing.
    offset = torch.tensor([100.0, -50.0, 3.0, 7.0])
    assert metrics.paired_difference(first + offset, second + offset) == pytest.approx((gap, standard_error))
    with pytest.raises(ValueError, match="one shape"):
        metrics.paired_difference(first, second[:3])


def test_mutual_info_saturation_is_flagged_near_log_n() -> None:
    n = 180
    generator = torch.Generator().manual_seed(0)
    # Posteriors far apart with tiny variance: every z identifies its x, the estimate hits its cap log N.
    separated = torch.randn(n, 4, generator=generator) * 50.0
    tiny = torch.full((n, 4), -12.0)
    estimate = metrics.mutual_info(separated, tiny)
    assert estimate == pytest.approx(math.log(n), abs=1e-3)
    assert metrics.mutual_info_saturated(estimate, n)
    # Overlapping posteriors (a weakly informative code): well below the cap, a measurement.
    overlapping = torch.randn(n, 4, generator=generator) * 0.3
    low = metrics.mutual_info(overlapping, torch.zeros(n, 4))
    assert low < math.log(n) - 1.0 and not metrics.mutual_info_saturated(low, n)
