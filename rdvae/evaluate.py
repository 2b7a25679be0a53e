"""Held-out evaluation of a VAE: rate, distortion, ELBO, IWAE bound and collapse diagnostics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from rdvae import metrics
from rdvae.models import VAE


@dataclass(frozen=True)
class PerExample:
    """Per-example held-out bounds, for paired comparisons of models on the same examples. Each [N], nats."""

    elbo: torch.Tensor
    iwae: torch.Tensor | None = None


@dataclass(frozen=True)
class HeldOutMetrics:
    """Held-out metrics in nats per example.

    `elbo_samples` z per example estimate D (and so the ELBO): the final evaluation reuses the IWAE samples, which
    cuts the Monte-Carlo noise of near-ties. `mutual_info` is the N-point estimate, capped at `mutual_info_cap` =
    log N; when `mutual_info_saturated` it only bounds I(x; z) from below and `marginal_kl` (R - MI) is None.
    `iwae_ll` is None when no importance samples were asked for.
    """

    rate: float
    distortion: float
    elbo: float
    active_units: int
    mutual_info: float
    marginal_kl: float | None
    collapsed: bool
    kl_per_dim: list[float] = field(default_factory=list)
    iwae_ll: float | None = None
    iwae_samples: int = 0
    elbo_samples: int = 1
    elbo_se: float = 0.0
    mutual_info_cap: float = math.inf
    mutual_info_saturated: bool = False
    examples: int = 0
    per_example: PerExample | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, float]:
        """Scalar metrics as floats (what trackers and Ray Tune take); booleans become 0.0/1.0."""
        values = asdict(self)
        for key in ("kl_per_dim", "per_example"):
            values.pop(key)
        for key in ("collapsed", "mutual_info_saturated", "active_units", "iwae_samples", "elbo_samples", "examples"):
            values[key] = float(values[key])
        for key in ("marginal_kl", "iwae_ll"):
            if values[key] is None:
                values.pop(key)
        if self.iwae_ll is not None:
            values["nll"] = -self.iwae_ll
        return values


@torch.no_grad()
def importance_terms(
    model: VAE, x: torch.Tensor, samples: int, batch_size: int = 256, max_rows: int = 65_536
) -> tuple[torch.Tensor, torch.Tensor]:
    """k = `samples` draws z_i ~ q(z|x) per example. x: [N, D] -> (mean_i log p(x|z_i): [N], IWAE bound: [N]).

    The IWAE bound is L_k = log (1/k) sum_i p(x, z_i) / q(z_i|x) (Burda et al. 2015); the first term is the
    k-sample estimate of -D. Drawn in chunks so that at most `max_rows` (example, sample) pairs are in memory.
    """
    if samples < 1:
        raise ValueError(f"iwae samples must be >= 1, got {samples}")
    reconstructions, bounds = [], []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size]
        mu, logvar = model.encode(batch)
        std = (0.5 * logvar).exp()
        per_chunk = max(1, max_rows // batch.shape[0])
        log_weights, log_likelihood_sum = [], torch.zeros(batch.shape[0], device=x.device, dtype=mu.dtype)
        for taken in range(0, samples, per_chunk):
            k = min(per_chunk, samples - taken)
            z = mu[None] + std[None] * torch.randn(k, *mu.shape, device=mu.device, dtype=mu.dtype)
            log_px = model.log_likelihood(batch.repeat(k, 1), z.reshape(-1, mu.shape[1])).view(k, -1)
            log_pz = metrics.gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
            log_qz = metrics.gaussian_log_density(z, mu[None], logvar[None])
            log_weights.append(log_px + log_pz - log_qz)
            log_likelihood_sum += log_px.sum(0)
        reconstructions.append(log_likelihood_sum / samples)
        bounds.append(torch.logsumexp(torch.cat(log_weights, dim=0), dim=0) - math.log(samples))
    return torch.cat(reconstructions), torch.cat(bounds)


def iwae_log_likelihood(
    model: VAE, x: torch.Tensor, samples: int, batch_size: int = 256, max_rows: int = 65_536
) -> torch.Tensor:
    """IWAE bound L_k per example (Burda et al. 2015). x: [N, D] -> [N]."""
    return importance_terms(model, x, samples, batch_size, max_rows)[1]


@torch.no_grad()
def evaluate(
    model: VAE,
    x: torch.Tensor,
    iwae_samples: int = 0,
    batch_size: int = 1024,
    seed: int = 0,
    collapse_rate_threshold: float = metrics.COLLAPSE_RATE_THRESHOLD,
) -> HeldOutMetrics:
    """All held-out metrics of `model` on `x: [N, D]`, reproducible for a given `seed`.

    With `iwae_samples` = k > 0, D and the ELBO use the same k draws per example as the IWAE bound.
    """
    if x.shape[0] < 2:
        raise ValueError(f"held-out evaluation needs at least 2 examples, got {x.shape[0]}")
    was_training = model.training
    model.eval()
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            mus, logvars, samples, log_likelihoods = [], [], [], []
            for start in range(0, x.shape[0], batch_size):
                batch = x[start : start + batch_size]
                mu, logvar = model.encode(batch)
                z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
                mus.append(mu)
                logvars.append(logvar)
                samples.append(z)
                log_likelihoods.append(model.log_likelihood(batch, z))
            mu, logvar, z = torch.cat(mus), torch.cat(logvars), torch.cat(samples)
            log_likelihood, iwae = torch.cat(log_likelihoods), None
            if iwae_samples > 0:
                log_likelihood, iwae = importance_terms(model, x, iwae_samples)
            mutual_info = metrics.mutual_info(mu, logvar, z)
            active = metrics.active_units(mu)
            per_example_kl = metrics.gaussian_kl(mu, logvar).sum(-1)
    finally:
        model.train(was_training)
    per_example_elbo = log_likelihood - per_example_kl
    rate, distortion = metrics.rate(mu, logvar), metrics.distortion(log_likelihood)
    saturated = metrics.mutual_info_saturated(mutual_info, x.shape[0])
    return HeldOutMetrics(
        rate=rate,
        distortion=distortion,
        elbo=metrics.elbo(rate, distortion),
        active_units=active,
        mutual_info=mutual_info,
        marginal_kl=None if saturated else metrics.marginal_kl(rate, mutual_info),
        collapsed=metrics.is_collapsed(rate, active, collapse_rate_threshold),
        kl_per_dim=[float(v) for v in metrics.kl_per_dim(mu, logvar)],
        iwae_ll=None if iwae is None else float(iwae.mean()),
        iwae_samples=iwae_samples,
        elbo_samples=max(1, iwae_samples),
        elbo_se=float(per_example_elbo.std(unbiased=True) / math.sqrt(x.shape[0])),
        mutual_info_cap=metrics.mutual_info_cap(x.shape[0]),
        mutual_info_saturated=saturated,
        examples=int(x.shape[0]),
        per_example=PerExample(elbo=per_example_elbo.cpu(), iwae=None if iwae is None else iwae.cpu()),
    )
