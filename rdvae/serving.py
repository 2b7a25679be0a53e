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
        # Servers hand over what clients send (numpy's default is float64): cast, and refuse a wrong shape in one line.
        if x.dim() != 2 or x.shape[1] != self.vae.input_dim:
            raise ValueError(f"expected inputs of shape [N, {self.vae.input_dim}], got {list(x.shape)}")
        return self.vae.encode(x.to(next(self.vae.parameters()).dtype))[0]
