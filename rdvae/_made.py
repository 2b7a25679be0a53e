"""Autoregressive decoder: a MADE masked MLP over pixels, conditioned on z (Germain et al. 2015)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _MaskedLinear(nn.Linear):
    def __init__(self, fan_in: int, fan_out: int, mask: torch.Tensor, bias: bool = True) -> None:
        super().__init__(fan_in, fan_out, bias=bias)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def hidden_degrees(width: int, input_dim: int) -> torch.Tensor:
    """Degrees of a hidden layer's units, spread evenly over 1..D-1 (Germain et al. 2015). -> [width].

    A layer narrower than D - 1 still covers the whole range (unit k gets 1 + floor(k (D - 1) / width)); a wider
    one cycles through 1..D-1. Deterministic, so a model needs no mask seed to be rebuilt.
    """
    span = max(1, input_dim - 1)
    units = torch.arange(width)
    if width >= span:
        return units % span + 1
    return units * span // width + 1


class MadeDecoder(nn.Module):
    """logits_d = f_d(x_<d, z): pixel d sees earlier pixels (natural order) and the whole latent z.

    Such a decoder can model p(x) alone, so a VAE using it may ignore z entirely: Alemi et al.'s
    'auto-decoding' regime, where the maximum-ELBO model sits at rate ~ 0.
    """

    def __init__(self, input_dim: int, latent_dim: int, hidden_dims: list[int], activation: str) -> None:
        super().__init__()
        self.input_dim = input_dim
        degrees = [torch.arange(1, input_dim + 1)]
        for width in hidden_dims:
            degrees.append(hidden_degrees(width, input_dim))
        self.hidden = nn.ModuleList()
        self.conditioners = nn.ModuleList()
        for previous, current in zip(degrees[:-1], degrees[1:], strict=True):
            mask = (current[:, None] >= previous[None, :]).float()
            self.hidden.append(_MaskedLinear(len(previous), len(current), mask))
            self.conditioners.append(nn.Linear(latent_dim, len(current), bias=False))
        output_mask = (degrees[0][:, None] > degrees[-1][None, :]).float()
        self.output = _MaskedLinear(len(degrees[-1]), input_dim, output_mask)
        # Direct input-to-output connections (Germain et al. 2015, Sec. 4): pixel d always sees x_<d, whatever the
        # hidden widths, so a narrow MADE keeps its whole autoregressive context.
        direct_mask = (degrees[0][:, None] > degrees[0][None, :]).float()
        self.direct = _MaskedLinear(input_dim, input_dim, direct_mask, bias=False)
        self.latent_to_output = nn.Linear(latent_dim, input_dim)
        self.activation: nn.Module = nn.Tanh() if activation == "tanh" else nn.ReLU()

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x: [B, D] (binary), z: [B, Z] -> logits [B, D]."""
        h = x
        for layer, conditioner in zip(self.hidden, self.conditioners, strict=True):
            h = self.activation(layer(h) + conditioner(z))
        return self.output(h) + self.direct(x) + self.latent_to_output(z)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, greedy: bool = False) -> torch.Tensor:
        """Generate x pixel by pixel (D decoder passes). z: [B, Z] -> x: [B, D]."""
        x = torch.zeros(z.shape[0], self.input_dim, device=z.device)
        for d in range(self.input_dim):
            probs = torch.sigmoid(self.forward(x, z)[:, d])
            x[:, d] = (probs > 0.5).float() if greedy else torch.bernoulli(probs)
        return x
