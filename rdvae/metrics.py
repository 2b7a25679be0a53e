"""Held-out rate-distortion metrics: pure functions of tensors, in nats per example."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)

ACTIVE_UNIT_THRESHOLD = 0.01
COLLAPSE_RATE_THRESHOLD = 0.1
MUTUAL_INFO_MARGIN = math.log(2.0)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension. mu, logvar: [N, Z] -> [N, Z]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """E_x KL_d averaged over examples. mu, logvar: [N, Z] -> [Z]."""
    return gaussian_kl(mu, logvar).mean(0)


def rate(mu: torch.Tensor, logvar: torch.Tensor) -> float:
    """R = E_x KL(q(z|x) || p(z)). mu, logvar: [N, Z] -> nats."""
    return float(gaussian_kl(mu, logvar).sum(-1).mean())


def distortion(log_likelihood: torch.Tensor) -> float:
    """D = -E_x E_q log p(x|z). log_likelihood: [N] (one z ~ q(z|x) each, or a mean over samples) -> nats."""
    return float(-log_likelihood.mean())


def elbo(rate_value: float, distortion_value: float) -> float:
    """ELBO = -(D + R), always with beta = 1 whatever beta trained the model."""
    return -(distortion_value + rate_value)


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Units u with A_u = Var_x(E_q[z_u|x]) > threshold (Burda et al. 2015). mu: [N, Z] -> count."""
    if mu.shape[0] < 2:
        raise ValueError("active_units needs at least 2 examples to estimate a variance")
    return int((mu.var(0, unbiased=True) > threshold).sum())


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dim. Broadcasts: [..., Z] -> [...]."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


def mutual_info(mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor | None = None, chunk: int = 256) -> float:
    """I_q(x; z) = E_x[E_q log q(z|x) - E_q log q(z)] with q(z) the aggregate posterior (He et al. 2019).

    mu, logvar: [N, Z]; z: [N, Z], one sample per x (drawn when None). log q(z_n) is the logsumexp over all N
    posteriors minus log N, computed `chunk` rows at a time so memory is O(chunk * N * Z). Bounded by log N.
    """
    if z is None:
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    n = mu.shape[0]
    log_q_cond = gaussian_log_density(z, mu, logvar)
    log_q_marginal = torch.empty(n, device=mu.device, dtype=mu.dtype)
    for start in range(0, n, chunk):
        block = z[start : start + chunk, None, :]
        log_q_marginal[start : start + chunk] = torch.logsumexp(
            gaussian_log_density(block, mu[None], logvar[None]), dim=1
        ) - math.log(n)
    return float((log_q_cond - log_q_marginal).mean())


def mutual_info_cap(examples: int) -> float:
    """log N: the most the N-point estimator of `mutual_info` can report, whatever the true I(x; z)."""
    return math.log(examples)


def mutual_info_saturated(mutual_info_value: float, examples: int, margin: float = MUTUAL_INFO_MARGIN) -> bool:
    """The estimate is within `margin` nats of its cap log N (default log 2: a typical posterior overlaps fewer than
    two others'): there it is a lower bound that ties every more informative model, not a measurement."""
    return mutual_info_value >= mutual_info_cap(examples) - margin


def marginal_kl(rate_value: float, mutual_info_value: float) -> float:
    """KL(q(z) || p(z)) = R - I(x; z) (Hoffman & Johnson 2016), clipped at 0 against estimator noise.

    Only meaningful while the MI estimate is not saturated (see `mutual_info_saturated`): above log N it measures
    the cap, not the aggregate posterior.
    """
    return max(0.0, rate_value - mutual_info_value)


def paired_difference(first: torch.Tensor, second: torch.Tensor) -> tuple[float, float]:
    """Mean of first - second over the same held-out examples and its standard error. first, second: [N] -> nats.

    SE = std(first_n - second_n) / sqrt(N) (sample std, N - 1): pairing removes the per-example difficulty both
    models share, which dominates the unpaired spread of per-example ELBOs.
    """
    if first.shape != second.shape or first.dim() != 1:
        raise ValueError(f"paired_difference needs two [N] tensors of one shape, got {first.shape}, {second.shape}")
    if first.shape[0] < 2:
        raise ValueError("paired_difference needs at least 2 examples")
    difference = (first - second).double()
    return float(difference.mean()), float(difference.std(unbiased=True) / math.sqrt(difference.shape[0]))


def log_mean_exp(values: torch.Tensor, dim: int) -> torch.Tensor:
    """log (1/k) sum_i exp(values_i) along `dim`."""
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


def is_collapsed(rate_value: float, active_unit_count: int, rate_threshold: float = COLLAPSE_RATE_THRESHOLD) -> bool:
    """Collapsed when no unit is active or the rate is below `rate_threshold` nats (default 0.1 nats).

    Either means the decoder output (almost) does not depend on x: the latent carries < 0.15 bits.
    """
    return active_unit_count == 0 or rate_value < rate_threshold
