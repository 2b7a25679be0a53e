"""Decoder likelihoods p(x|z) for binary, real-valued and count data; each returns log p(x|z) in nats per example.

Every family keeps D = -E_q log p(x|z) a log-density of the data as given, so R, D, ELBO, IWAE and the RD plane keep
their meaning whatever the likelihood:

- `bernoulli`: x in {0, 1}; the decoder outputs one logit per feature.
- `gaussian`: any finite real x; mean per feature and a fixed (`gaussian_std`) or learned variance. With
  `standardize`, the model sees (x - m) / s (m, s: per-feature mean and std of the training split, stored as buffers
  with the model) and log p(x|z) = log N((x - m) / s; mean, var) - sum_d log s_d: still a density of x in its own
  units; `VAE.reconstruct_mean` returns m + s * mean.
- `poisson`, `nb`, `zinb`: non-negative integer counts, as scVI (Lopez et al. 2018) models gene expression: the
  library size l = sum_d x_d is observed, the decoder outputs proportions rho = softmax(out), the mean is l * rho,
  the inverse dispersion theta_d of the negative binomial is learned per feature, and the zero-inflated NB adds a
  per-feature dropout logit from the decoder. With an observed library size, D = -log p(x | z, l). The encoder
  sees log(1 + x), as in scVI.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Likelihood = Literal["bernoulli", "gaussian", "poisson", "nb", "zinb"]
COUNT_LIKELIHOODS = ("poisson", "nb", "zinb")
LOG_2PI = math.log(2.0 * math.pi)
_LOG_VAR_RANGE = (-10.0, 5.0)


def _times_log(x: torch.Tensor, log_value: torch.Tensor) -> torch.Tensor:
    # x * log(value) with 0 * log(0) = 0: an example with library size 0 has mean 0 and only zero counts
    return torch.where(x > 0, x * log_value, torch.zeros_like(log_value))


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)) per element. x, logits: [B, D] -> [B, D]."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_var)) per element. x, mean, log_var: [B, D] -> [B, D]."""
    return -0.5 * (LOG_2PI + log_var + (x - mean).pow(2) / log_var.exp())


def poisson_log_prob(x: torch.Tensor, log_rate: torch.Tensor) -> torch.Tensor:
    """log Poisson(x; exp(log_rate)) per element. x (counts), log_rate: [B, D] -> [B, D]."""
    return _times_log(x, log_rate) - log_rate.exp() - torch.lgamma(x + 1.0)


def negative_binomial_log_prob(x: torch.Tensor, log_mean: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """log NB(x; mean mu, inverse dispersion theta) per element, Var = mu + mu^2 / theta (scVI's parametrisation).

    x, log_mean: [B, D]; log_theta: [D] or [B, D] -> [B, D]."""
    theta = log_theta.exp()
    log_theta_plus_mean = torch.logaddexp(log_theta.expand_as(log_mean), log_mean)
    return (
        theta * (log_theta - log_theta_plus_mean)
        + _times_log(x, log_mean - log_theta_plus_mean)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )


def zero_inflated_nb_log_prob(
    x: torch.Tensor, log_mean: torch.Tensor, log_theta: torch.Tensor, dropout_logits: torch.Tensor
) -> torch.Tensor:
    """log ZINB per element: pi * [x = 0] + (1 - pi) * NB(x; mu, theta), pi = sigmoid(dropout_logits).

    x, log_mean, dropout_logits: [B, D]; log_theta: [D] or [B, D] -> [B, D]."""
    log_pi = F.logsigmoid(dropout_logits)
    log_not_pi = F.logsigmoid(-dropout_logits)
    log_nb = negative_binomial_log_prob(x, log_mean, log_theta)
    return torch.where(x > 0, log_not_pi + log_nb, torch.logaddexp(log_pi, log_not_pi + log_nb))


class LikelihoodHead(nn.Module):
    """Turns decoder outputs `[B, channels * D]` into log p(x|z) and a mean; holds per-feature parameters.

    Channels per feature: 2 for a learned-variance Gaussian (mean, log variance) and for ZINB (proportion logit,
    dropout logit), else 1. Per-feature parameters: `log_theta` (NB, ZINB), `feature_mean` / `feature_std`
    (standardised Gaussian; set from the training split by `fit_standardization`, saved in the state dict).
    """

    def __init__(
        self, kind: Likelihood, input_dim: int, gaussian_variance: str, gaussian_std: float, standardize: bool
    ) -> None:
        super().__init__()
        self.kind = kind
        self.input_dim = input_dim
        self.learned_variance = kind == "gaussian" and gaussian_variance == "learned"
        self.fixed_log_var = 2.0 * math.log(gaussian_std)
        self.standardize = standardize
        self.channels = 2 if self.learned_variance or kind == "zinb" else 1
        if kind in ("nb", "zinb"):
            self.log_theta = nn.Parameter(torch.zeros(input_dim))
        if standardize:
            self.register_buffer("feature_mean", torch.zeros(input_dim))
            self.register_buffer("feature_std", torch.ones(input_dim))

    @torch.no_grad()
    def fit_standardization(self, train: torch.Tensor) -> None:
        """Per-feature mean and std of `train: [N, D]`; a constant feature gets std 1 (it stays constant)."""
        std = train.std(dim=0) if train.shape[0] > 1 else torch.ones_like(train[0])
        self.feature_mean.copy_(train.mean(dim=0))
        self.feature_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder sees: log(1 + counts), standardised features, or x itself. x: [B, D] -> [B, D]."""
        if self.kind in COUNT_LIKELIHOODS:
            return torch.log1p(x)
        if self.standardize:
            return (x - self.feature_mean) / self.feature_std
        return x

    def _channels(self, out: torch.Tensor) -> torch.Tensor:
        return out.reshape(out.shape[0], self.channels, self.input_dim)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over features. x: [B, D], out: decoder output [B, channels * D] -> [B] (nats)."""
        parts = self._channels(out)
        if self.kind == "bernoulli":
            return bernoulli_log_prob(x, parts[:, 0]).sum(-1)
        if self.kind == "gaussian":
            mean = parts[:, 0]
            if self.learned_variance:
                log_var = parts[:, 1].clamp(*_LOG_VAR_RANGE)
            else:
                log_var = torch.full_like(mean, self.fixed_log_var)
            if not self.standardize:
                return gaussian_log_prob(x, mean, log_var).sum(-1)
            scaled = (x - self.feature_mean) / self.feature_std
            # change of variables back to x's own units: log p(x) = log p(scaled) - sum_d log s_d
            return gaussian_log_prob(scaled, mean, log_var).sum(-1) - self.feature_std.log().sum()
        log_mean = self._log_mean(x.sum(-1, keepdim=True), parts[:, 0])
        if self.kind == "poisson":
            return poisson_log_prob(x, log_mean).sum(-1)
        if self.kind == "nb":
            return negative_binomial_log_prob(x, log_mean, self.log_theta).sum(-1)
        return zero_inflated_nb_log_prob(x, log_mean, self.log_theta, parts[:, 1]).sum(-1)

    @staticmethod
    def _log_mean(library: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        # log(l * softmax(logits)) computed in log space: exact for tiny proportions, -inf only where l = 0
        return torch.log(library) + torch.log_softmax(logits, dim=-1)

    def mean(self, out: torch.Tensor, library: torch.Tensor | None = None) -> torch.Tensor:
        """E[x|z] in the data's units. out: [B, channels * D]; library: [B] or [B, 1] observed library sizes
        (counts only; without it, count models return the expected proportions: rho, or (1 - pi) * rho for
        ZINB) -> [B, D]."""
        parts = self._channels(out)
        if self.kind == "bernoulli":
            return torch.sigmoid(parts[:, 0])
        if self.kind == "gaussian":
            mean = parts[:, 0]
            return mean * self.feature_std + self.feature_mean if self.standardize else mean
        proportions = torch.softmax(parts[:, 0], dim=-1)
        if self.kind == "zinb":
            proportions = proportions * torch.sigmoid(-parts[:, 1])
        return proportions if library is None else proportions * library.reshape(-1, 1)
