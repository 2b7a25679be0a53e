"""Held-out evaluation of a VAE: rate, distortion, ELBO, IWAE bound and collapse diagnostics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from rdvae import metrics
from rdvae.models import VAE


@dataclass(frozen=True)
class HeldOutMetrics:
    """Held-out metrics in nats per example. `iwae_ll` is None when no importance samples were asked for."""

    rate: float
    distortion: float
    elbo: float
    active_units: int
    mutual_info: float
    marginal_kl: float
    collapsed: bool
    kl_per_dim: list[float] = field(default_factory=list)
    iwae_ll: float | None = None
    iwae_samples: int = 0

    def as_dict(self) -> dict[str, float]:
        """Scalar metrics as floats (what trackers and Ray Tune take); `collapsed` becomes 0.0/1.0."""
        values = asdict(self)
        values.pop("kl_per_dim")
        values["collapsed"] = float(self.collapsed)
        values["active_units"] = float(self.active_units)
        values["iwae_samples"] = float(self.iwae_samples)
        if self.iwae_ll is None:
            values.pop("iwae_ll")
        else:
            values["nll"] = -self.iwae_ll
        return values


@torch.no_grad()
def iwae_log_likelihood(
    model: VAE, x: torch.Tensor, samples: int, batch_size: int = 256, max_rows: int = 65_536
) -> torch.Tensor:
    """IWAE bound L_k = log (1/k) sum_i p(x, z_i) / q(z_i|x) per example (Burda et al. 2015). x: [N, D] -> [N].

    Samples are drawn in chunks so that at most `max_rows` (example, sample) pairs are in memory at once.
    """
    if samples < 1:
        raise ValueError(f"iwae samples must be >= 1, got {samples}")
    results = []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size]
        mu, logvar = model.encode(batch)
        std = (0.5 * logvar).exp()
        per_chunk = max(1, max_rows // batch.shape[0])
        log_weights = []
        for taken in range(0, samples, per_chunk):
            k = min(per_chunk, samples - taken)
            z = mu[None] + std[None] * torch.randn(k, *mu.shape, device=mu.device, dtype=mu.dtype)
            flat_z = z.reshape(-1, mu.shape[1])
            log_px = model.log_likelihood(batch.repeat(k, 1), flat_z).view(k, -1)
            log_pz = metrics.gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
            log_qz = metrics.gaussian_log_density(z, mu[None], logvar[None])
            log_weights.append(log_px + log_pz - log_qz)
        stacked = torch.cat(log_weights, dim=0)
        results.append(torch.logsumexp(stacked, dim=0) - math.log(samples))
    return torch.cat(results)


@torch.no_grad()
def evaluate(
    model: VAE,
    x: torch.Tensor,
    iwae_samples: int = 0,
    batch_size: int = 1024,
    seed: int = 0,
    collapse_rate_threshold: float = metrics.COLLAPSE_RATE_THRESHOLD,
) -> HeldOutMetrics:
    """All held-out metrics of `model` on `x: [N, D]`, reproducible for a given `seed`."""
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
            rate = metrics.rate(mu, logvar)
            distortion = metrics.distortion(torch.cat(log_likelihoods))
            mutual_info = metrics.mutual_info(mu, logvar, z)
            active = metrics.active_units(mu)
            iwae = None
            if iwae_samples > 0:
                iwae = float(iwae_log_likelihood(model, x, iwae_samples).mean())
    finally:
        model.train(was_training)
    return HeldOutMetrics(
        rate=rate,
        distortion=distortion,
        elbo=metrics.elbo(rate, distortion),
        active_units=active,
        mutual_info=mutual_info,
        marginal_kl=metrics.marginal_kl(rate, mutual_info),
        collapsed=metrics.is_collapsed(rate, active, collapse_rate_threshold),
        kl_per_dim=[float(v) for v in metrics.kl_per_dim(mu, logvar)],
        iwae_ll=iwae,
        iwae_samples=iwae_samples,
    )
