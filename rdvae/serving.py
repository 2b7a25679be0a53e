"""Servable view of a trained VAE: one input tensor in, the posterior mean out (what model servers expect)."""

from __future__ import annotations

import torch
from torch import nn

from rdvae.models import VAE


class PosteriorMean(nn.Module):
    """x: [B, D] (as trained on: bits, reals, counts) -> E_q[z|x] = mu(x): [B, Z]; the full model is `.vae`.

    `VAE.forward` returns a (log p(x|z), mu, logvar) tuple for training; model servers (MLflow pyfunc) need
    a single output tensor, and the latent code is what downstream users ask a VAE for.
    """

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x)[0]
